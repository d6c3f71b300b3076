"""The search agent: the LangGraph graph, its state and nodes, proposers, the archive and budgets."""
