"""lossforge.proposers."""
