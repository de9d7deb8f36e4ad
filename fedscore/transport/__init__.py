"""gRPC glue: message conversion, chunked streams, clients, error mapping."""
