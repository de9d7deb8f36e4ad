"""Cryptography: Paillier arithmetic, obfuscators, multi-exponentiation, masks."""
