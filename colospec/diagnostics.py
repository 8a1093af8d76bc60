"""Diagnostics: every problem found in a spec, pointing at a file position and a JSON path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]
PathT = tuple[str | int, ...]


def json_path(path: PathT) -> str:
    """Render a path like ('hosts', 'primary', 'name') as $.hosts.primary.name."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.replace("_", "a").replace("-", "a").isalnum():
            out += f".{part}"
        else:
            escaped = part.replace("\\", "\\\\").replace("'", "\\'")
            out += f"['{escaped}']"
    return out


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    col: int
    severity: Severity
    path: str
    problem: str
    fix: str
    # A stable id per check (e.g. "schema-pattern", "second-heartbeat-path"): what
    # `validate --allow` names and `--format json` reports.
    rule: str = "spec"

    def format(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.path}: {self.problem} — {self.fix}"

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.col,
            "severity": self.severity,
            "path": self.path,
            "rule": self.rule,
            "message": self.problem,
            "hint": self.fix,
        }


class SpecError(Exception):
    """Raised when a spec cannot be used; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic]):
        super().__init__("\n".join(d.format() for d in diagnostics))
        self.diagnostics = sorted(diagnostics)
