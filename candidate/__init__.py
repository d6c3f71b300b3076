"""lossforge.candidate."""
