"""Implementations of the configuration building block, one module each."""
