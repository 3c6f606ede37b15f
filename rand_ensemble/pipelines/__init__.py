"""Apache Beam jobs: render a pool to Parquet, weak-label it (imported only by the CLI)."""
