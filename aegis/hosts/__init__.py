"""Proxy hosts: validation of host settings, request routing, and publishing changes."""
