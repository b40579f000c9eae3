"""The stub provider: runs workflows as their ``tack: {stub: ...}`` config scripts them.

A simulation for local runs, demos and tests; no CI runs behind it.
"""
