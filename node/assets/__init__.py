"""ABS assets: loan tapes, canonical loan records, pool versions anchored on chain, provenance bundles."""
