"""lrpseg schemas package."""
