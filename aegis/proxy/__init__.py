"""Host routing, the plain-HTTP listener and the reverse proxy engine."""
