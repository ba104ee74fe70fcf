"""The lake: object storage (local or S3), Delta tables, bronze objects and the manifest."""
