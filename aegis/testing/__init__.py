"""Public fakes shipped with Aegis, so users and tests can exercise it without real services.

Each fake follows the contract of the service it replaces closely enough that the code under
test cannot tell the difference through the wire protocol.
"""
