"""The tool API: plain typed functions over the sandbox, the proxy and the archive (reused by other agents)."""
