"""`natlens ingest`: captures -> packet tables (Parquet) with a per-capture tally."""
