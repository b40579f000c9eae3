"""The provider contract as a test suite that any provider, in any language, can be held to.

``python -m tack_provider_kit.contract HOST:PORT`` runs every check against a
running provider and prints one line per check.
"""
