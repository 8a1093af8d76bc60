"""Shared Jinja environment for text artifacts (systemd units, shell scripts)."""

from __future__ import annotations

import re
from functools import cache

import jinja2

from colospec import __version__
from colospec.resources import resource_dir

_SYSTEMD_SAFE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def systemd_quote(arg: str) -> str:
    """One command-line word for ExecStart= (systemd.service(5), "Command lines").

    '%' starts a specifier and '$' an environment variable everywhere, so both are
    doubled; anything beyond a safe set is double-quoted with C-style escapes.
    """
    text = arg.replace("%", "%%").replace("$", "$$")
    if _SYSTEMD_SAFE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def shell_quote(value: str) -> str:
    """Single-quote for bash unless plainly safe; a "'" becomes '\\''."""
    if _SHELL_SAFE.fullmatch(value):
        return f"'{value}'"
    return "'" + value.replace("'", "'\\''") + "'"


def exec_line(argv: list[str], indent: str = "    ") -> str:
    """argv as an ExecStart= value: one option (flag and its value) per continuation line,
    so a changed option shows as one changed line in review."""
    lines: list[list[str]] = []
    for i, arg in enumerate(argv):
        joins_flag = i > 1 and argv[i - 1].startswith("-") and not arg.startswith("-")
        if joins_flag and len(lines[-1]) == 1:
            lines[-1].append(systemd_quote(arg))
        else:
            lines.append([systemd_quote(arg)])
    return (" \\\n" + indent).join(" ".join(words) for words in lines)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["systemd_quote"] = systemd_quote
    env.filters["shell_quote"] = shell_quote
    env.filters["exec_line"] = exec_line
    env.globals["generator"] = f"colospec {__version__}"
    return env


def render_template(name: str, **context) -> str:
    return environment().get_template(name).render(**context)
