"""Implementations of the lock building block, one module each."""
