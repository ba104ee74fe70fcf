"""data.binance.vision: S3 listing, verified downloads, zip streams and CSV formats."""
