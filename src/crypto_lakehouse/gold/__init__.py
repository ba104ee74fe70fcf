"""Gold: derived Delta tables (resampled bars, summaries, funding, basis), built incrementally."""
