"""Thin gRPC daemons around the protocol core: the party daemon and the coordinator."""
