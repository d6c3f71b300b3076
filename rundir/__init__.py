"""lossforge.rundir."""
