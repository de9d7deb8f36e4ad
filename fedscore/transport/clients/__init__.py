"""gRPC clients of the member daemons, one module per service: each method mirrors one protocol step and
moves only bytes (fedscore.transport.codec checks and converts them)."""
