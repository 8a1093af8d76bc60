"""How long does re-protection take, and how long is the guest paused? Per disk size,
medians over repeated runs.

Each run builds a fresh pair (two namespaces, Debian's QEMU under KVM, firmware-only
guests, 128 MiB RAM, failover.rejoin: automatic) whose two identical images have their
first FILL fraction written with real data (qemu-io on the files, flushed, before the
runners start). Then: the primary's QEMU is killed, b takes over and serves alone, D MiB
are written through b's block layer (HMP qemu-io on colo-disk0, at offset 0, another
pattern: only b has them), the page cache is flushed, and a's runner is started again.
It joins b, whose runner copies b's whole disk onto a's (blockdev-mirror) and restarts
COLO (README, Re-protection). Measured:
  join       from starting a's runner to both hosts reporting COLO and protected
  resync     b's last_resync: total, and per stage (channels, export, mirror,
             channels-connected, attach, colo)
  pause      the guest's pause: from the QMP event STOP after `stop` in stage attach to the
             next RESUME (COLO's first checkpoint), both as b's runner logged them (-v,
             millisecond stamps). attach+colo is shown beside it for reference; it is not
             a bound: attach starts before `stop`, and the first RESUME comes after stage
             colo ends (it ends when QEMU reports COLO mode primary)
  MiB/s      image size / mirror stage time, and allocated data / mirror stage time
  plain copy the same copy without COLO: `qemu-img convert -t writeback` of b's image (as
             the mirror will read it) to a new raw file beside it, page cache warm and
             flushed before, as for the mirror. Both end by flushing their target to disk
             (the mirror before BLOCK_JOB_READY). ratio = mirror stage / plain copy
Targets: join <= 1.2 x the plain copy + 3 s (issue 11); the pause does not grow with the
disk size, since the copy runs while the guest serves; the copy costs about what a plain
copy of the same data costs (ratio near 1).
usage: python3 bench/reprotect.py [RUNS] [--sizes 64,512,2048] [--fill 0.5] [--write 32]
  (as root)   RUNS per size (default 3); --sizes in MiB; --fill: fraction of each image
  written before the pair starts; --write: MiB written on b after the failover
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from pairlab import PairLab  # noqa: E402

STAGES = ("channels", "export", "mirror", "channels-connected", "attach", "colo")
FILL_PATTERN, WRITE_PATTERN = 0x5A, 0xA5
STAMP = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) ")


def qemu_io_file(image: Path, *commands: str) -> None:
    args = [x for c in commands for x in ("-c", c)]
    subprocess.run(["qemu-io", "-f", "raw", *args, str(image)], check=True,
                   capture_output=True, timeout=600)  # fmt: skip


def fill(lab: PairLab, mib: int) -> None:
    """The same data on both images, on disk before either QEMU opens them."""
    if mib:
        for h in ("a", "b"):
            qemu_io_file(lab.tmp / h / "disk.raw", f"write -P {FILL_PATTERN:#x} 0 {mib}M", "flush")
    os.sync()


def status(lab: PairLab, h: str) -> dict:
    return lab.ask(h, {"cmd": "status"})


def write_on(lab: PairLab, h: str, mib: int) -> None:
    line = f"write -P {WRITE_PATTERN:#x} 0 {mib}M"
    reply = lab.ask(h, {"cmd": "qmp", "execute": "human-monitor-command",
                        "arguments": {"command-line": f'qemu-io colo-disk0 "{line}"'}},
                    timeout=300)  # fmt: skip
    if not reply.get("ok") or "failed" in str(reply.get("return", "")).lower():
        raise SystemExit(f"qemu-io on {h} failed: {reply}")


def plain_copy(lab: PairLab) -> float:
    """qemu-img convert of the serving image (as it stands) to a new raw file: seconds."""
    src, dst = lab.tmp / "b" / "disk.raw", lab.tmp / "plain-copy.raw"
    t0 = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-U", "-f", "raw", "-O", "raw", "-t", "writeback",
                    str(src), str(dst)], check=True, capture_output=True, timeout=600)  # fmt: skip
    took = time.monotonic() - t0
    dst.unlink()
    os.sync()
    return took


def guest_pause_ms(log: str) -> float | None:
    """STOP after the copy (stage attach's `stop`) to the next RESUME, in b's -v log."""
    lines = log.splitlines()
    start = next((i for i, x in enumerate(lines) if "channels-connected done" in x), None)
    if start is None:
        return None
    stop = resume = None
    for line in lines[start:]:
        m = STAMP.match(line)
        if not m:
            continue
        if stop is None and "QMP event STOP" in line:
            stop = datetime.strptime(m[1], "%H:%M:%S.%f")
        elif stop is not None and "QMP event RESUME" in line:
            resume = datetime.strptime(m[1], "%H:%M:%S.%f")
            break
    if stop is None or resume is None:
        return None
    if resume < stop:  # past midnight
        resume += timedelta(days=1)
    return (resume - stop).total_seconds() * 1000


def run_once(size: int, fill_mib: int, write_mib: int) -> dict[str, float]:
    with PairLab(checkpoint_delay_ms=2000, image_mib=size, failover={"rejoin": "automatic"}) as lab:
        fill(lab, fill_mib)
        lab.start("b", "-v")  # -v: b's log stamps the QMP events STOP and RESUME
        lab.start("a")
        lab.wait_colo()
        lab.kill_qemu("a")
        lab.wait_for("b serves alone", lambda: status(lab, "b")["phase"] == "alone", 30)
        if write_mib:
            write_on(lab, "b", write_mib)
        lab.wait_for("runner a exits", lambda: lab.procs["a"].poll() is not None, 30)
        image = lab.tmp / "b" / "disk.raw"
        allocated = image.stat().st_blocks * 512 / (1 << 20)
        os.sync()
        plain = plain_copy(lab)

        def protected() -> bool:
            b, a = status(lab, "b"), status(lab, "a")
            return (b["colo_mode"], a["colo_mode"], b["protected"], a["protected"]) == (
                "primary", "secondary", True, True)  # fmt: skip

        t0 = time.monotonic()
        lab.start("a")
        lab.wait_for("a protects b again", protected, timeout=600, every=0.02)
        join = time.monotonic() - t0
        resync = status(lab, "b")["last_resync"]
        if write_mib and not has_pattern(lab.tmp / "a" / "disk.raw", WRITE_PATTERN):
            raise SystemExit(f"a's image lacks b's writes after the copy\n{lab.describe()}")
        pause = guest_pause_ms(lab.log_text("b"))
    stages = resync["stages_ms"]
    mirror = stages["mirror"] / 1000
    return {
        "join": join * 1000,
        "total": resync["took_ms"],
        **{s: stages.get(s, float("nan")) for s in STAGES},
        "pause": float("nan") if pause is None else pause,
        "attach+colo": stages["attach"] + stages["colo"],
        "MiB/s": size / mirror,
        "data MiB/s": allocated / mirror,
        "data MiB": allocated,
        "plain": plain * 1000,
        "ratio": mirror / plain,
    }


def has_pattern(image: Path, pattern: int) -> bool:
    done = subprocess.run(["qemu-io", "-f", "raw", "-U", "-r", "-c",
                           f"read -P {pattern:#x} 0 64k", str(image)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


def main() -> None:
    p = argparse.ArgumentParser(description="re-protection on real pairs, per disk size")
    p.add_argument("runs", nargs="?", type=int, default=3)
    p.add_argument("--sizes", default="64,512,2048", help="image sizes in MiB")
    p.add_argument("--fill", type=float, default=0.5, help="fraction written before the start")
    p.add_argument("--write", type=int, default=32, help="MiB written on b after the failover")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"re-protection after the primary's QEMU is killed, {args.runs} runs per size (KVM, "
          f"firmware guests, 128 MiB RAM); images {args.fill:.0%} filled before the start, "
          f"{args.write} MiB written on b after the failover", flush=True)  # fmt: skip
    results: dict[int, list[dict[str, float]]] = {}
    t_all = time.monotonic()
    for size in sizes:
        fill_mib, write_mib = int(size * args.fill), min(args.write, size)
        results[size] = []
        for i in range(args.runs):
            r = run_once(size, fill_mib, write_mib)
            results[size].append(r)
            print(f"  {size:5} MiB run {i + 1}: join {r['join']:6.0f} ms, resync {r['total']:6.0f} "
                  f"ms (mirror {r['mirror']:6.0f}), pause {r['pause']:4.0f} ms, plain copy "
                  f"{r['plain']:6.0f} ms", flush=True)  # fmt: skip
    print(f"\nmedians over {args.runs} runs (ms unless stated):")
    columns = ["join", "total", *STAGES, "pause", "attach+colo", "MiB/s", "data MiB/s", "plain",
               "ratio"]  # fmt: skip
    labels = {"total": "resync", "channels-connected": "chan-conn", "attach+colo": "att+colo",
              "data MiB/s": "data/s", "plain": "plain cp"}  # fmt: skip
    print(f"{'size MiB':>8} {'data MiB':>8} " + " ".join(f"{labels.get(c, c):>9}" for c in columns))
    for size, runs in results.items():
        med = {c: statistics.median(r[c] for r in runs) for c in [*columns, "data MiB"]}
        cells = [f"{med[c]:9.2f}" if c == "ratio" else f"{med[c]:9.0f}" for c in columns]
        print(f"{size:8} {med['data MiB']:8.0f} " + " ".join(cells))
    print(f"\npause: STOP -> first RESUME on the serving host (its -v log, ms stamps); att+colo "
          f"is not a bound. ratio: mirror stage / plain `qemu-img convert` of the same image. "
          f"MiB/s: image size per mirror second; data/s: allocated data per mirror second. "
          f"whole run {time.monotonic() - t_all:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
