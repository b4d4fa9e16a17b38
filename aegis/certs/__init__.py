"""Certificates in memory: parsed, validated, indexed by hostname for the TLS layer."""
