"""lossforge.bench."""
