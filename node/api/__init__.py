"""The node's HTTP API (FastAPI): a thin layer over the node package."""
