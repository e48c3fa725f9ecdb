"""Component implementations, one module each, found by type string in the registry."""
