"""The quality checks: coverage and gaps, invariants, id sequences, anomalies, fingerprints."""
