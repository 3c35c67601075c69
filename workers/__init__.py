"""lrpseg workers package."""
