"""A retrieval-backed assistant for a Thai document on Latin American integration."""

__version__ = "0.1.0"
