"""The Parquet result store and the read-only SQL sandbox over it."""
