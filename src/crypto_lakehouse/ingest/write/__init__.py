"""Write silver rows to Delta: staged commits, worker-written Parquet files, bar batches."""
