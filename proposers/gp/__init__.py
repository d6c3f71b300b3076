"""lossforge.proposers.gp."""
