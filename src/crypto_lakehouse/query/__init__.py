"""Query: DuckDB over Delta snapshots, and the Python API for notebooks."""
