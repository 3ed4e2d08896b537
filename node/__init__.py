"""Alliance node: shared fraud intelligence and ABS asset provenance for a consortium of banks."""
