"""Aegis: a TLS-terminating reverse proxy whose heart is certificate management."""

__version__ = "0.1.0"
