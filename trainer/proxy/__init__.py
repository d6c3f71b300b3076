"""The CPU proxy task: a synthetic preference benchmark modelled on the DiscoPOP paper's IMDb experiment."""
