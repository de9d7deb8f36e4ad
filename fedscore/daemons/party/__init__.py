"""The party daemon: its gRPC services and the domain objects behind them, one concern per module."""
