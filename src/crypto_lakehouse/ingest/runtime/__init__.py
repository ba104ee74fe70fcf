"""Where an ingest runs: executors, the memory budget, load sampling, heap tuning."""
