"""Implementations of the secretstores building block, one module each."""
