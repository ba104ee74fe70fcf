"""Recompute the quality of touched (symbol, day)s and store it in gold tables."""
