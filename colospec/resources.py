"""Find the schemas/ and templates/ directories, in a source checkout or an installed wheel."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


@cache
def resource_dir(name: str) -> Path:
    """schemas/ or templates/: the checkout's own copy first, else the installed package data.

    In a wheel both directories sit inside the colospec package (pyproject.toml maps them
    there). They are data, not packages: asking importlib for `colospec.schemas` itself
    yields a namespace package's MultiplexedPath, which is not a filesystem path.
    """
    local = _CHECKOUT / name
    if (_CHECKOUT / "pyproject.toml").is_file() and local.is_dir():
        return local
    installed = resources.files("colospec") / name
    if not isinstance(installed, Path) or not installed.is_dir():
        raise FileNotFoundError(
            f"colospec's {name}/ is missing from the installation ({installed})"
        )
    return installed
