"""The Textual TUI (issue 6)."""
