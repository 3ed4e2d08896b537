"""The built-in credit workflow modules, each a plugin of the node's extension API (node.extensions)."""
