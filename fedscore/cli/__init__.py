"""The `fedscore` command: its parser, its commands and the local runs they drive."""
from fedscore.cli.app import main

__all__ = ["main"]
