"""The runner's control socket and state file, for `colospec status` and `failover`.

state.json survives the runner (a restarted runner and `status` read it); the socket
answers while the runner lives. Both sit in the host's run directory (mode 0700).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def control_socket(run_dir: Path) -> Path:
    return run_dir / "runner.sock"


def state_file(run_dir: Path) -> Path:
    return run_dir / "state.json"


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_state(run_dir: Path) -> dict[str, Any]:
    return read_json(state_file(run_dir))


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    write_json(state_file(run_dir), state)


async def serve_control(run_dir: Path, handler: Handler) -> asyncio.AbstractServer:
    path = control_socket(run_dir)
    path.unlink(missing_ok=True)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            request = json.loads(line)
            reply = await handler(request if isinstance(request, dict) else {})
        except (ValueError, TimeoutError):
            reply = {"ok": False, "error": "bad request"}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass  # the caller gave up waiting: nothing to tell it
        finally:
            writer.close()

    server = await asyncio.start_unix_server(client, path=str(path))
    os.chmod(path, 0o600)
    return server


async def ask(run_dir: Path, request: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """One request to a running runner; raises OSError if none answers."""
    reader, writer = await asyncio.open_unix_connection(str(control_socket(run_dir)))
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    if not line:
        raise ConnectionError("the runner closed the connection")
    return json.loads(line)
