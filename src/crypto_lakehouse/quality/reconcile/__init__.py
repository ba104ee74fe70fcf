"""Reconciliation: compare rows of two origins and store the mismatches."""
