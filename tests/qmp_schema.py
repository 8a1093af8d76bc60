"""Check QMP commands against a real QEMU's query-qmp-schema (names, arguments, types)."""

from __future__ import annotations

from typing import Any

_JSON = {
    "string": str, "int": int, "number": (int, float), "boolean": bool, "null": type(None),
    "value": object,
}  # fmt: skip


class QmpSchema:
    def __init__(self, entries: list[dict[str, Any]]):
        self.by_name = {e["name"]: e for e in entries}

    def command(self, name: str) -> dict[str, Any] | None:
        e = self.by_name.get(name)
        return e if e and e["meta-type"] == "command" else None

    def check(self, command: dict[str, Any]) -> list[str]:
        """Problems with one {"execute", "arguments"} command; [] when QEMU would accept it."""
        name = command["execute"]
        entry = self.command(name)
        if entry is None:
            return [f"{name}: no such command"]
        return self._value(command.get("arguments", {}), entry["arg-type"], name)

    def _value(self, value: Any, type_name: str, where: str) -> list[str]:
        t = self.by_name[type_name]
        meta = t["meta-type"]
        if meta == "builtin":
            ok = isinstance(value, _JSON[t["json-type"]]) and not (
                t["json-type"] == "int" and isinstance(value, bool)
            )
            return [] if ok else [f"{where}: {value!r} is not {t['json-type']}"]
        if meta == "enum":
            return [] if value in t["values"] else [f"{where}: {value!r} not in {t['values']}"]
        if meta == "array":
            if not isinstance(value, list):
                return [f"{where}: expected a list"]
            return [p for i, v in enumerate(value)
                    for p in self._value(v, t["element-type"], f"{where}[{i}]")]  # fmt: skip
        if meta == "alternate":
            for member in t["members"]:
                if not self._value(value, member["type"], where):
                    return []
            return [f"{where}: {value!r} matches no alternative"]
        if meta == "object":
            return self._object(value, t, where)
        return [f"{where}: unexpected meta-type {meta}"]

    def _object(self, value: Any, t: dict[str, Any], where: str) -> list[str]:
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        members = {m["name"]: m for m in t["members"]}
        if "tag" in t:
            tag = value.get(t["tag"])
            for variant in t.get("variants", []):
                if variant["case"] == tag:
                    members |= {m["name"]: m for m in self.by_name[variant["type"]]["members"]}
        problems = [f"{where}: unknown argument '{k}'" for k in value if k not in members]
        for key, member in members.items():
            if key in value:
                problems += self._value(value[key], member["type"], f"{where}.{key}")
            elif "default" not in member:
                problems.append(f"{where}: missing argument '{key}'")
        return problems
