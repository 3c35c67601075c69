"""lrpseg service package."""
