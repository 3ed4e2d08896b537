"""Command groups of the `alliance` CLI, one module each."""
