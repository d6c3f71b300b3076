"""lossforge: discover preference-optimization losses with an LLM or evolution in the loop (see README)."""
