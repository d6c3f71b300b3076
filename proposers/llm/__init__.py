"""lossforge.proposers.llm."""
