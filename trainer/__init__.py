"""Training with a candidate loss: the loss library, the CPU proxy task and (later) the TRL job."""
