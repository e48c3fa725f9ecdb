"""Implementations of the hello building block, one module each."""
