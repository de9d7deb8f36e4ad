"""The observer's daemon: a regulator's replica of every chain its members let it read (fedscore.ledger.observation)."""
