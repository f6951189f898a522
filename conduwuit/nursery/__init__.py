"""nursery layer."""
