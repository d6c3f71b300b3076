"""Judges that turn a trained model into a score: question sets, answer generation, LLM judges."""
