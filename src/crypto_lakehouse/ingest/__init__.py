"""Archive -> bronze -> silver: plan a run, fetch, verify, parse, write and commit."""
