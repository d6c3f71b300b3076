"""lossforge.report: HTML and Markdown reports of a run directory or a bench directory."""
