"""Implementations of the state building block, one module each."""
