"""The `alliance` command: a thin Typer layer over the `node` package."""
