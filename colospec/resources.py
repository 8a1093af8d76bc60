"""Find the schemas/ and templates/ directories, in a source checkout or an installed wheel."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


@cache
def resource_dir(name: str) -> Path:
    """schemas/ or templates/: the checkout's own copy first, else the installed package data."""
    local = _CHECKOUT / name
    if (_CHECKOUT / "pyproject.toml").is_file() and local.is_dir():
        return local
    return Path(str(resources.files(f"colospec.{name}")))
