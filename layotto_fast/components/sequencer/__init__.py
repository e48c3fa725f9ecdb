"""Implementations of the sequencer building block, one module each."""
