"""lossforge.settings: the configuration's pydantic models, as leaves.

What it guarantees: every module here imports only pydantic, the standard library and other settings
modules (no torch, numpy, openai, LangGraph and nothing else of lossforge; an import-linter contract
holds it), so the run configuration (`lossforge.config`) composes them without loading what it
configures. Every model forbids unknown keys (`settings.base.Strict`).
"""
