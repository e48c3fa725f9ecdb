"""Implementations of the pubsub building block, one module each."""
