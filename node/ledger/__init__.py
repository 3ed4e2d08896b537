"""Fraud-indicator ledger: identifier normalisation and the records members share."""
