"""Stage 2: datasets converted to Parquet, Iceberg and Spark (needs the [warehouse] extra)."""
