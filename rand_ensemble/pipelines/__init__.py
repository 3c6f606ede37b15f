"""Apache Beam jobs: render a pool to Parquet, weak-label it. Imported only by the CLI and the jobs."""
