"""The audit chain: co-signed blocks of job events and fees, one SQLite replica per member."""
