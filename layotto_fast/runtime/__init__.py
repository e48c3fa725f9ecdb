"""Building blocks: one interface per block, resolved by component type string."""
