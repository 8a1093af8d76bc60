"""tests/qemu-tcg: the build script, the COLO-under-TCG patch, and the cached patched QEMU."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT
from test_real_qemu import qmp_session

HERE = ROOT / "tests" / "qemu-tcg"
SCRIPT = HERE / "build-qemu.sh"
PATCH = HERE / "colo-tcg.patch"
CACHE = Path(os.environ.get("COLOSPEC_QEMU_CACHE", "/var/cache/colospec-test/qemu-7.2-colo-tcg"))
BINARY = CACHE / "bin" / "qemu-system-x86_64"
STAMP = CACHE / "stamp"
FIRMWARE = ["-L", "/usr/share/qemu", "-L", "/usr/share/seabios", "-L", "/usr/lib/ipxe/qemu"]
LOCK = "qemu_mutex_lock_iothread();"
UNLOCK = "qemu_mutex_unlock_iothread();"
SAVE = "qemu_savevm_live_state("


def test_build_script_passes_shellcheck():
    result = subprocess.run(
        ["shellcheck", "--severity=style", str(SCRIPT.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_script_is_executable():
    assert os.access(SCRIPT, os.X_OK), f"chmod +x {SCRIPT}"


def parse_diff(text: str) -> dict[str, list[list[str]]]:
    """{path: [hunk lines]} of a unified diff; hunk lines keep their ' ', '+', '-' prefix."""
    files: dict[str, list[list[str]]] = {}
    lines = text.splitlines()
    current: list[list[str]] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old = line[4:].split("\t")[0]
            new = lines[i + 1][4:].split("\t")[0]
            assert old.startswith("a/") and new.startswith("b/"), ("not -p1", old, new)
            assert old[2:] == new[2:], ("renames a file", old, new)
            current = files.setdefault(new[2:], [])
            i += 2
            continue
        m = re.match(r"@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@", line)
        if m:
            assert current is not None, f"hunk before a file header: {line}"
            old_n, new_n = int(m.group(1) or 1), int(m.group(2) or 1)
            hunk = []
            i += 1
            while old_n or new_n:
                body = lines[i]
                tag = body[:1] or " "
                assert tag in " +-", f"malformed hunk line: {body!r}"
                old_n -= tag in " -"
                new_n -= tag in " +"
                hunk.append(tag + body[1:])
                i += 1
            assert old_n == 0 and new_n == 0, f"hunk counts do not match near {line}"
            current.append(hunk)
            continue
        i += 1
    return files


FILES = ["migration/colo.c", "migration/ram.c", "softmmu/cpu-timers.c", "softmmu/physmem.c"]


def patch_problems(
    text: str, dirs: str = "softmmu", lock: str = LOCK, unlock: str = UNLOCK
) -> list[str]:
    """What is wrong with the patch; [] when it makes exactly the documented fixes.
    dirs, lock, unlock: where the line keeps physmem.c and cpu-timers.c, its lock helpers."""
    try:
        files = parse_diff(text)
    except (AssertionError, IndexError) as e:
        return [f"malformed diff: {e}"]
    expected = sorted(f.replace("softmmu/", f"{dirs}/") for f in FILES)
    if sorted(files) != expected:
        return [f"touches {sorted(files)}, not exactly {expected}"]
    return (
        colo_lock_problems(files["migration/colo.c"], lock, unlock)
        + rearm_problems(files, dirs)
        + tick_problems(files[f"{dirs}/cpu-timers.c"])
    )


def colo_lock_problems(hunks: list[list[str]], lock: str = LOCK, unlock: str = UNLOCK) -> list[str]:
    """Fix 1: the lock directly around the one qemu_savevm_live_state() call, nothing else."""
    if len(hunks) != 1:
        return [f"colo.c: {len(hunks)} hunks, expected one"]
    hunk = [line[0] + line[1:].strip() for line in hunks[0]]  # tag + code, spacing ignored
    changed = [line for line in hunk if line[0] in "+-"]
    if changed != [f"+{lock}", f"+{unlock}"]:
        return [f"changes {changed}, expected only +{lock} and +{unlock}"]
    at = hunk.index(f"+{lock}")
    if not (hunk[at + 1 : at + 2] and hunk[at + 1].startswith(f" {SAVE}")):
        return [f"{lock} is not directly before {SAVE}...)"]
    if hunk[at + 2 : at + 3] != [f"+{unlock}"]:
        return [f"{unlock} is not directly after {SAVE}...)"]
    return []


def _code(hunks: list[list[str]], tag: str) -> list[str]:
    """The changed lines of one tag, comments and blank lines dropped."""
    lines = [h[1:].strip() for hunk in hunks for h in hunk if h[:1] == tag]
    return [x for x in lines if x and not x.startswith(("/*", "*", "*/"))]


def tick_problems(hunks: list[list[str]]) -> list[str]:
    """Fix 3: a loaded tick count restarts TCG's monotonic check (no TSC jump)."""
    added = _code(hunks, "+")
    if ".post_load = cpu_timers_post_load," not in added:
        return ["cpu-timers.c: the timer state needs a post_load"]
    if "timers_state.cpu_ticks_prev = timers_state.cpu_ticks_offset;" not in added:
        return ["cpu-timers.c: post_load must reset cpu_ticks_prev to the loaded offset"]
    return []


def rearm_problems(files: dict[str, list[list[str]]], dirs: str = "softmmu") -> list[str]:
    """Fix 2: TCG's dirty tracking re-armed after every sync, on both sides of COLO."""
    problems = []
    if _code(files["migration/ram.c"], "+") != ["memory_global_after_dirty_log_sync();"]:
        problems.append("ram.c: expected only memory_global_after_dirty_log_sync() added")
    if _code(files["migration/ram.c"], "-"):
        problems.append("ram.c: removes code")
    added = _code(files[f"{dirs}/physmem.c"], "+")
    if "tlb_flush(cpu);" not in added or not any("run_on_cpu(" in a for a in added):
        problems.append("physmem.c: the after-sync hook must flush the vCPU's TLB")
    return problems


def test_patch_makes_exactly_the_two_fixes():
    assert patch_problems(PATCH.read_text()) == []


def mutated_patches() -> dict[str, tuple[str, str]]:
    """{name: (broken variant of the patch, expected problem)}"""
    good = PATCH.read_text()
    lock = next(line for line in good.splitlines() if line.startswith(f"+    {LOCK}"))
    unlock = next(line for line in good.splitlines() if line.startswith(f"+    {UNLOCK}"))
    save = next(line for line in good.splitlines() if line.startswith(f"     {SAVE}"))
    at = next(line for line in good.splitlines() if line.startswith("@@ "))
    return {
        "another-file": (
            good + "--- a/migration/savevm.c\n+++ b/migration/savevm.c\n@@ -1 +1,2 @@\n x\n+y\n",
            "not exactly",
        ),
        "no-tick-reset": (
            good.replace(
                "+        timers_state.cpu_ticks_prev = timers_state.cpu_ticks_offset;",
                "+        (void)0;",
            ),
            "reset cpu_ticks_prev",
        ),
        "no-tlb-flush": (
            good.replace("+    tlb_flush(cpu);", "+    (void)cpu;"),
            "flush the vCPU's TLB",
        ),
        "no-unlock": (
            good.replace(unlock + "\n", "").replace(",9 @@", ",8 @@"),
            f"expected only +{LOCK}",
        ),
        "lock-too-early": (
            good.replace(lock + "\n", "").replace(at, f"{at}\n{lock}"),
            "not directly before",
        ),
        "changes-the-call": (
            good.replace(save, f"-{save[1:]}\n+{save[1:]}"),
            "expected only",
        ),
        "bad-counts": (good.replace(",9 @@", ",12 @@"), "malformed diff"),
    }


@pytest.mark.parametrize("name", sorted(mutated_patches()))
def test_patch_check_catches_mistakes(name):
    text, expected = mutated_patches()[name]
    problems = patch_problems(text)
    assert any(expected in p for p in problems), problems


def test_patch_header_explains_itself():
    header = PATCH.read_text().split("\n--- a/", 1)[0]
    for words in ("qemu_savevm_live_state", "TCG", "TLB", "colo_flush_ram_cache", "cpu_ticks_prev"):
        assert words in header, header


def wanted_stamp() -> str:
    return "".join(
        f"{name}-sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}\n"
        for name, path in (("patch", PATCH), ("script", SCRIPT))
    )


def patched_qemu() -> str:
    """The cached patched QEMU; skip (or fail with COLOSPEC_NEED_TCG_QEMU=1) when absent."""
    problem = None
    if not os.access(BINARY, os.X_OK):
        problem = f"{BINARY} does not exist"
    elif not STAMP.is_file() or not STAMP.read_text().startswith(wanted_stamp()):
        problem = f"{BINARY} was built from another patch or script (stamp {STAMP} differs)"
    if problem:
        message = f"{problem}: run tests/qemu-tcg/build-qemu.sh (as root) to build it"
        if os.environ.get("COLOSPEC_NEED_TCG_QEMU") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return str(BINARY)


def test_patched_qemu_is_7_2_with_the_patch():
    binary = patched_qemu()
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert re.match(r"QEMU emulator version 7\.2(\.\d+)? \(Debian 1:7\.2\+dfsg-", first), first
    assert "colospec colo-tcg" in first, first


def run_and_query(binary: str, args: list[str], *commands: str) -> list:
    with tempfile.TemporaryDirectory(prefix="cs-") as tmp:  # unix socket paths must stay short
        sock = f"{tmp}/qmp.sock"
        proc = subprocess.Popen(
            [binary, *args, "-S", "-nodefaults", "-display", "none", *FIRMWARE,
             "-qmp", f"unix:{sock},server=on,wait=off"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
            if proc.returncode is not None:
                raise AssertionError(f"QEMU exited {proc.returncode}: {proc.stderr.read()}")
            return asyncio.run(qmp_session(sock, *commands))
        finally:
            proc.kill()
            proc.wait()


def test_patched_qemu_has_colo_commands():
    [schema] = run_and_query(patched_qemu(), ["-machine", "none"], "query-qmp-schema")
    commands = {e["name"] for e in schema if e["meta-type"] == "command"}
    assert "x-colo-lost-heartbeat" in commands


def test_patched_qemu_starts_a_tcg_pc_with_debian_firmware():
    status, kvm = run_and_query(
        patched_qemu(), ["-accel", "tcg", "-machine", "pc"], "query-status", "query-kvm"
    )
    assert status["status"] == "prelaunch", status
    assert kvm["enabled"] is False, kvm


# ----- QEMU 10.0 (build-qemu.sh 10.0, colo-tcg-10.0.patch) ------------------------------

PATCH_10_0 = HERE / "colo-tcg-10.0.patch"
CACHE_10_0 = Path(
    os.environ.get("COLOSPEC_QEMU_CACHE_10_0", "/var/cache/colospec-test/qemu-10.0-colo-tcg")
)
BQL = {"dirs": "system", "lock": "bql_lock();", "unlock": "bql_unlock();"}


def test_patch_10_0_makes_the_same_fixes_with_10_0_names():
    assert patch_problems(PATCH_10_0.read_text(), **BQL) == []


def test_patch_10_0_check_catches_the_7_2_lock_helpers():
    text = (
        PATCH_10_0.read_text()
        .replace("+    bql_lock();", f"+    {LOCK}")
        .replace("+    bql_unlock();", f"+    {UNLOCK}")
    )
    assert any("expected only +bql_lock();" in p for p in patch_problems(text, **BQL))


def test_patch_10_0_header_says_what_was_checked():
    header = PATCH_10_0.read_text().split("\n--- a/", 1)[0]
    for words in (
        "bql_lock()",
        "system/",
        "qemu_savevm_live_state",
        "cpu_physical_memory_dirty_bits_cleared",  # 10.0's own, partial, TLB reset
        "colo_flush_ram_cache",
        "cpu_ticks_prev",
        "1:10.0.13+ds-0+deb13u1",
    ):
        assert words in header, words


def test_build_script_refuses_an_unknown_line():
    for args in (["9.2"], ["7.2", "10.0"]):
        result = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, result.stderr
        assert "usage:" in result.stderr


def patched_qemu_10_0() -> str:
    """The cached patched QEMU 10.0; skip (or fail with COLOSPEC_NEED_TCG_QEMU=1) when absent."""
    binary, stamp = CACHE_10_0 / "bin" / "qemu-system-x86_64", CACHE_10_0 / "stamp"
    wanted = "".join(
        f"{name}-sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}\n"
        for name, path in (("patch", PATCH_10_0), ("script", SCRIPT))
    )
    problem = None
    if not os.access(binary, os.X_OK):
        problem = f"{binary} does not exist"
    elif not stamp.is_file() or not stamp.read_text().startswith(wanted):
        problem = f"{binary} was built from another patch or script (stamp {stamp} differs)"
    if problem:
        message = f"{problem}: run tests/qemu-tcg/build-qemu.sh 10.0 (as root) to build it"
        if os.environ.get("COLOSPEC_NEED_TCG_QEMU_10_0") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return str(binary)


def test_patched_qemu_10_0_is_trixies_10_0_with_the_patch():
    from colospec.versions import defects_for

    result = subprocess.run(
        [patched_qemu_10_0(), "--version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    m = re.match(r"QEMU emulator version (10\.0\.\d+) \(Debian 1:10\.0\.\d+\+ds-", first)
    assert m, first
    assert "colospec colo-tcg" in first, first
    assert defects_for(m.group(1), "tcg", first) == []  # neither the deadlock nor 10.0.0-10.0.6


def test_patched_qemu_10_0_has_colo_commands():
    [schema] = run_and_query(patched_qemu_10_0(), ["-machine", "none"], "query-qmp-schema")
    commands = {e["name"] for e in schema if e["meta-type"] == "command"}
    assert "x-colo-lost-heartbeat" in commands


def test_patched_qemu_10_0_starts_a_tcg_pc_with_debian_firmware():
    status, kvm = run_and_query(
        patched_qemu_10_0(), ["-accel", "tcg", "-machine", "pc"], "query-status", "query-kvm"
    )
    assert status["status"] == "prelaunch", status
    assert kvm["enabled"] is False, kvm
