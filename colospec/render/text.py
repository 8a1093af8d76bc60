"""Shared Jinja environment for text artifacts (systemd units, shell scripts)."""

from __future__ import annotations

import re
from functools import cache

import jinja2

from colospec import __version__
from colospec.resources import resource_dir

_SYSTEMD_SAFE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def systemd_quote(arg: str, *, executable: bool = False) -> str:
    """One command-line word for ExecStart= (systemd.service(5), "Command lines").

    '%' starts a specifier everywhere and is doubled. '$' starts an environment variable
    in the arguments only: systemd expands none in the executable's path, where a doubled
    '$' would stay doubled (seen under systemd 252 by tests/test_systemd_quoting.py).
    Anything beyond a safe set is double-quoted with C-style escapes.
    """
    text = arg.replace("%", "%%")
    if not executable:
        text = text.replace("$", "$$")
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
        word = systemd_quote(arg, executable=i == 0)
        if joins_flag and len(lines[-1]) == 1:
            lines[-1].append(word)
        else:
            lines.append([word])
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
