"""Cryptography helpers: master-key wrapping of private keys at rest."""
