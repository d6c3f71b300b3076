"""Judges that turn a trained policy into a score: the proxy oracle (and, later, LLM judges)."""
