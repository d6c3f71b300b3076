"""What every command module of the CLI shares: the stderr console, failing with a usage error
(`_fail`: the message on stderr, exit code 2 unless told), loading the run configuration (a bad config
is a usage error) and printing JSON on stdout.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from lossforge.config import ConfigError, RunConfig, load_config

err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")  # escaped: "[proposer]" in a message is text, not a style
    raise typer.Exit(code)


def _config(path: Optional[Path], overrides: dict[str, Any]) -> RunConfig:
    try:
        return load_config(path, overrides)
    except ConfigError as error:
        _fail(str(error))
        raise  # unreachable


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
