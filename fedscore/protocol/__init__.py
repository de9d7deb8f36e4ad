"""The protocol steps of each role, free of any network code."""
