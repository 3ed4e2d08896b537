"""Who may call the node: API keys and their roles."""
