"""The generated units under a real systemd bring a real pair up, fail over and stop.

This machine kind has no systemd as PID 1, so each lab host gets its own systemd
(tests/systemd_host.py) in the host's network namespace; `systemctl start` on each
host's target brings the pair to COLO mode. The units also pass `systemd-analyze verify`
(tests/test_real_tools.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from systemd_host import SystemdHost

from colospec.compile import check_spec, render_pair
from colospec.writer import write_tree

from netns import add_bridge, ip, namespace
from pairlab import ROOT, PairLab

pytestmark = pytest.mark.integration
RESTART_WATCH_S = 3


def unit_commands(unit: Path, key: str) -> list[list[str]]:
    """The argv of each KEY= line, as systemd splits it (our units use its quoting subset)."""
    text = re.sub(r"\\\n", " ", unit.read_text())  # continuation lines
    out = []
    for line in text.splitlines():
        if line.startswith(f"{key}="):
            words = shlex.split(line.removeprefix(f"{key}="), posix=True)
            out.append([w.replace("%%", "%").replace("$$", "$") for w in words])
    return out


def test_unit_quoting_round_trips_through_the_parser(tmp_path):
    from colospec.render.text import exec_line

    argv = ["/bin/x", "-a", "plain", "with space", 'q"uote', "back\\slash", "50%", "$HOME", "a,b"]
    unit = tmp_path / "x.service"
    unit.write_text(f"[Service]\nExecStart={exec_line(argv)}\n")
    assert unit_commands(unit, "ExecStart") == [argv]


def test_systemd_root_script_passes_shellcheck():
    script = ROOT / "tests" / "systemd-root.sh"
    done = subprocess.run(["shellcheck", "--severity=style", str(script)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_systemctl_start_brings_the_pair_up_and_a_failover_follows():
    with PairLab(checkpoint_delay_ms=500) as lab:
        # The lab's files, and this checkout (an editable install runs colospec from it).
        shared = [lab.tmp, ROOT]
        with SystemdHost(lab.ns["a"], shared) as a, SystemdHost(lab.ns["b"], shared) as b:
            hosts = {"a": a, "b": b}
            try:
                check_pair_under_systemd(lab, hosts)
            except BaseException:
                for h, sd in hosts.items():
                    print(f"--- journal of host {h} ---\n{sd.journal()[-8000:]}")
                raise
            cgroups = [sd.cgroup for sd in hosts.values()]
        assert not any(cg.exists() for cg in cgroups)


def check_pair_under_systemd(lab: PairLab, hosts: dict[str, SystemdHost]) -> None:
    target = f"colospec-{lab.name}.target"
    units = {h: sorted((lab.host_dir(h) / "systemd").iterdir()) for h in hosts}
    for h, sd in hosts.items():
        sd.install_units(units[h])
    # `systemctl start` returns once the target is reached, i.e. after the runner's
    # READY=1 (Type=notify), which each runner sends only in COLO mode.
    with ThreadPoolExecutor(2) as pool:
        starts = {h: pool.submit(sd.systemctl, "start", target, check=False, timeout=120)
                  for h, sd in hosts.items()}  # fmt: skip
        for start in starts.values():
            assert start.result().returncode == 0, start.result().stderr
    for h, sd in hosts.items():
        names = [u.name for u in units[h]]
        # Every unit but the joining QEMU's, which only a runner starts (re-protection).
        want = ["inactive" if n.endswith("-qemu-join.service") else "active" for n in names]
        assert sd.systemctl("is-active", *names, check=False).stdout.split() == want, h

    def status(h: str) -> dict:
        colospec = unit_commands(next(u for u in units[h] if u.name.endswith("-runner.service")),
                                 "ExecStart")[0][0]  # fmt: skip
        return json.loads(hosts[h].run(colospec, "status", "--json", str(lab.host_dir(h))).stdout)

    assert (status("a")["role"], status("a")["colo_mode"]) == ("primary", "primary")
    assert (status("b")["role"], status("b")["colo_mode"]) == ("secondary", "secondary")

    # A runner that dies is restarted by systemd and adopts its QEMU: still protected.
    runner, qemu = f"colospec-{lab.name}-runner.service", f"colospec-{lab.name}-qemu.service"

    def main_pid(h: str, unit: str) -> str:
        return hosts[h].systemctl("show", "-P", "MainPID", unit).stdout.strip()

    before, qemu_before = main_pid("b", runner), main_pid("b", qemu)
    hosts["b"].systemctl("kill", "--signal=SIGKILL", runner)
    lab.wait_for("systemd to restart b's runner", lambda: main_pid("b", runner) not in
                 (before, "0") and hosts["b"].systemctl("is-active", runner, check=False)
                 .stdout.strip() == "active")  # fmt: skip
    assert main_pid("b", qemu) == qemu_before, "the runner's restart restarted QEMU"
    assert (status("b")["role"], status("b")["colo_mode"]) == ("secondary", "secondary")
    assert status("a")["peer"]["reachable"]
    # The same for an operator's restart of a runner (e.g. after upgrading colospec).
    qemu_before = main_pid("a", qemu)
    hosts["a"].systemctl("restart", runner)
    assert main_pid("a", qemu) == qemu_before, "restarting the runner restarted QEMU"
    assert (status("a")["role"], status("a")["colo_mode"]) == ("primary", "primary")

    hosts["a"].systemctl("kill", "--signal=SIGKILL", qemu)

    def b_took_over() -> bool:
        s = status("b")
        return (s["role"], s["colo_mode"], s["vm_status"]) == ("primary", "none", "running")

    lab.wait_for("b takes over", b_took_over)
    assert status("b")["last_failover"]["reason"]
    # systemd never starts a second QEMU on a: its runner exits 3 (QEMU gone) and is not
    # restarted, and a restarted runner would only require a running QEMU, not start one.
    lab.wait_for("a's runner to end", lambda: hosts["a"].systemctl(
        "is-active", runner, check=False).stdout.strip() in ("inactive", "failed"))  # fmt: skip
    time.sleep(RESTART_WATCH_S)  # longer than RestartSec=: a restart would have happened
    assert hosts["a"].systemctl("is-active", qemu, check=False).stdout.strip() != "active"
    assert main_pid("a", qemu) == "0", "systemd started a second QEMU after the first died"
    assert hosts["a"].systemctl("is-active", runner, check=False).stdout.strip() != "active"

    # Stopping the target, or the runner (the end of protection), stops everything and
    # removes the tap. systemctl returns once the target itself is down: it stops first,
    # being ordered after the rest.
    for h, what in (("a", target), ("b", runner)):
        sd = hosts[h]
        sd.systemctl("stop", what)
        names = [u.name for u in units[h]]
        lab.wait_for(f"{h}'s units to stop", lambda sd=sd, names=names: set(
            sd.systemctl("is-active", *names, check=False).stdout.split()
        ) <= {"inactive", "failed"})  # fmt: skip
        tap = subprocess.run(["ip", "-n", lab.ns[h], "link", "show", f"tap-{lab.name}"],
                             capture_output=True)  # fmt: skip
        assert tap.returncode != 0, f"{h}: the tap outlived its unit"


# ----- the units' sandbox ---------------------------------------------------------------
#
# The lab above keeps its files in /tmp, so its units share the host's /tmp (a private one
# would hide them). The tests below put the pair's files elsewhere, so that every unit
# gets its whole sandbox, and show what each may and may not do.

SANDBOX_BASE = Path("/var/lib/colospec-test")  # outside /tmp, /var/tmp and the homes
SERVICES = ("disks", "network", "qemu", "runner")
# `systemd-analyze security` (systemd 252) of out/'s units; 9.6 each before the sandbox.
# Lower them when the sandbox tightens; a unit above its ceiling fails.
EXPOSURE_CEILINGS = {
    "web1": {"disks": 1.0, "network": 1.6, "qemu": 1.7, "runner": 1.8, "qemu-join": 1.8},
    "vmft": {"disks": 1.0, "network": 1.6, "qemu": 2.9, "runner": 1.8},
}


@pytest.fixture
def outside_tmp():
    """A scratch directory where neither PrivateTmp= nor ProtectHome= reach."""
    SANDBOX_BASE.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="cs-", dir=SANDBOX_BASE))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            SANDBOX_BASE.rmdir()


def test_systemd_analyze_security_exposure_stays_low():
    """Each service's exposure, as systemd rates it, for every host in out/."""
    rows = []
    with namespace() as ns, SystemdHost(ns, []) as sd:
        for unit_dir in sorted(ROOT.glob("out/*/*/systemd")):
            pair, host = unit_dir.parent.parent.name, unit_dir.parent.name
            sd.install_units(sorted(unit_dir.iterdir()))  # loaded: analyze needs them so
            for part in EXPOSURE_CEILINGS[pair]:
                unit = f"colospec-{pair}-{part}.service"
                done = sd.run("systemd-analyze", "security", "--no-pager", unit, check=False)
                found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
                assert found, done.stdout + done.stderr
                rows.append((pair, host, part, float(found[1]), done.stdout))
    print("\n| pair | host | unit | exposure | ceiling |\n| --- | --- | --- | --- | --- |")
    for pair, host, part, score, _ in rows:
        print(f"| {pair} | {host} | {part} | {score} | {EXPOSURE_CEILINGS[pair][part]} |")
    over = [(p, h, u, s, text) for p, h, u, s, text in rows if s > EXPOSURE_CEILINGS[p][u]]
    assert not over, "\n".join(text for *_, text in over)


def _show(sd: SystemdHost, unit: str, *props: str) -> dict[str, list[str]]:
    """`systemctl show` values as words: systemd double-quotes a word that needs it and
    escapes with a backslash inside."""
    out = {}
    for line in sd.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout.splitlines():
        key, _, value = line.partition("=")
        words = re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', value)
        out[key] = [re.sub(r"\\(.)", r"\1", q) if q else w for q, w in words]
    return out


def test_sandbox_paths_reach_systemd_as_written(outside_tmp):
    """ReadWritePaths= and its kin carry any path the spec allows, quotes, '%', '$',
    backslashes and all; a home directory among them makes ProtectHome= read-only."""
    from test_systemd_quoting import ODD_ARG, ODD_DIR

    data = yaml.safe_load((ROOT / "examples/pair.yaml").read_text())
    odd = f"{outside_tmp}/{ODD_ARG},,x"
    data["vm"]["disk"]["image"] = f"{odd}/disk.raw"
    data["vm"]["kernel"]["path"] = f"/home/{ODD_DIR}/vmlinuz"
    data["hosts"]["secondary"]["scratch_dir"] = f"{outside_tmp}/{ODD_DIR}/./scratch/"
    data["runtime"] = {"artifacts_dir": f"/etc/{ODD_ARG}"}
    data["security"] = {"key_file": f"/etc/{ODD_DIR}%n.key"}
    spec = outside_tmp / "odd.yaml"
    spec.write_text(yaml.safe_dump(data, allow_unicode=True))
    pair = check_spec(spec).pair
    write_tree(outside_tmp / "out" / pair.name, render_pair(pair))
    host = pair.secondary
    lay = pair.layout(host)
    units = sorted((outside_tmp / "out" / pair.name / host.name / "systemd").iterdir())
    scratch = f"{outside_tmp}/{ODD_DIR}/scratch"
    expected = {
        "qemu": {"ReadWritePaths": [f"-{odd}/disk.raw", f"-{scratch}/web1-active.qcow2",
                                    f"-{scratch}/web1-hidden.qcow2"], "ProtectHome": ["read-only"]},
        "disks": {"ReadWritePaths": [f"-{scratch}"], "ProtectHome": ["read-only"]},
        "network": {"ReadWritePaths": [], "ProtectHome": ["read-only"]},
        "runner": {"ReadWritePaths": [f"-{lay.state_dir}"], "ProtectHome": ["read-only"]},
    }  # fmt: skip
    with namespace() as ns, SystemdHost(ns, [outside_tmp]) as sd:
        sd.install_units(units)
        for part in SERVICES:
            got = _show(sd, lay.unit(part), "ReadWritePaths", "ReadOnlyPaths",
                        "InaccessiblePaths", "ProtectHome", "PrivateTmp")  # fmt: skip
            want = expected[part] | {
                "ReadOnlyPaths": ["/run", f"-{lay.installed_dir}"],
                "InaccessiblePaths": [] if part == "runner" else [f"-{pair.security.key_file}"],
                "PrivateTmp": ["yes"],
            }
            assert got == want, part
        verify = sd.run("systemd-analyze", "verify", "--man=no", "--generators=no",
                        *(f"/etc/systemd/system/{u.name}" for u in units), check=False)  # fmt: skip
    # (The programs themselves do not exist here: only their absence may be reported.)
    assert all("is not executable" in line for line in verify.stderr.splitlines()), verify.stderr


def test_units_with_files_in_tmp_share_the_hosts_tmp():
    """A private /tmp would hide the pair's files: such units keep the host's."""
    data = yaml.safe_load((ROOT / "examples/pair.yaml").read_text())
    data["vm"]["disk"]["image"] = "/tmp/colospec/disk.raw"
    pair = check_spec_data(data)
    files = render_pair(pair)
    for host in pair.hosts:
        for part in SERVICES:
            text = files[f"{host.name}/systemd/{pair.layout(host).unit(part)}"].text
            shares = part in ("disks", "qemu", "runner")  # they open the image
            assert ("PrivateTmp=no\nReadWritePaths=-/tmp -/var/tmp\n" in text) == shares, part
            assert ("PrivateTmp=yes\n" in text) != shares, part


def test_a_disk_on_a_device_node_is_the_one_device_allowed():
    data = yaml.safe_load((ROOT / "examples/pair.yaml").read_text())
    data["vm"]["disk"]["image"] = "/dev/vg0/web1"
    pair = check_spec_data(data)
    files = render_pair(pair)
    qemu = files[f"{pair.primary.name}/systemd/{pair.layout(pair.primary).unit('qemu')}"].text
    assert "PrivateDevices=yes" not in qemu and "DevicePolicy=closed\n" in qemu
    assert {"DeviceAllow=/dev/vg0/web1 rw", "DeviceAllow=/dev/kvm rw",
            "DeviceAllow=/dev/net/tun rw"} <= set(qemu.splitlines())  # fmt: skip
    assert "ReadWritePaths=-/dev" not in qemu  # /dev is not made read-only
    runner = files[f"{pair.primary.name}/systemd/{pair.layout(pair.primary).unit('runner')}"]
    assert "DeviceAllow=/dev/vg0/web1 r\n" in runner.text  # qemu-img info on adoption


def test_ports_below_1024_are_the_only_capability_colo_qemu_and_the_runner_get():
    data = yaml.safe_load((ROOT / "examples/pair.yaml").read_text())
    data["replication"]["ports"] |= {"nbd": 889, "heartbeat": 890}
    pair = check_spec_data(data)
    files = render_pair(pair)
    lay = pair.layout(pair.primary)
    for part in ("qemu", "runner"):
        text = files[f"{pair.primary.name}/systemd/{lay.unit(part)}"].text
        assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" in text, part
    base = render_pair(check_spec(ROOT / "examples/pair.yaml").pair)
    for part in ("disks", "qemu", "runner"):
        assert (
            "CapabilityBoundingSet=\n" in base[f"{pair.primary.name}/systemd/{lay.unit(part)}"].text
        )


def check_spec_data(data: dict):
    with tempfile.TemporaryDirectory() as d:
        spec = Path(d) / "spec.yaml"
        spec.write_text(yaml.safe_dump(data))
        return check_spec(spec).pair


def _status_fields(sd: SystemdHost, pid: str) -> dict[str, str]:
    text = sd.run("cat", f"/proc/{pid}/status").stdout
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def check_sandbox(lab: PairLab, hosts: dict[str, SystemdHost]) -> None:
    """From inside the running QEMU's and runner's own mount namespaces."""
    key = lab.key_file.read_text().strip()
    for h, sd in hosts.items():
        pid = {p: sd.systemctl("show", "-P", "MainPID", f"colospec-{lab.name}-{p}.service")
               .stdout.strip() for p in ("qemu", "runner")}  # fmt: skip

        def inside(part: str, *argv: str, sd=sd, pid=pid) -> subprocess.CompletedProcess:
            return sd.run("nsenter", "-t", pid[part], "-m", "--", *argv, check=False)

        def writable(part: str, path: Path | str) -> bool:
            return inside(part, "/usr/bin/test", "-w", str(path)).returncode == 0

        for part in ("qemu", "runner"):
            status = _status_fields(sd, pid[part])
            assert int(status["CapBnd"], 16) == 0, (h, part, status["CapBnd"])
            assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2"), (h, part)
        # QEMU writes its disks and run directory; nothing else, and never the key.
        disks = [lab.tmp / h / "disk.raw"]
        if h == "b":
            disks += sorted((lab.tmp / h / "scratch").iterdir())
            assert len(disks) == 3, disks
        assert all(writable("qemu", d) for d in disks), h
        assert writable("qemu", lab.run_dir(h)) and writable("runner", lab.run_dir(h)), h
        assert not any(writable("runner", d) for d in disks), h
        for part in ("qemu", "runner"):
            for path in (lab.host_dir(h) / "plan.json", lab.tmp, "/etc", "/usr", "/run"):
                assert not writable(part, path), (h, part, path)
        # Every writable mount, besides /dev, /proc itself and the private /tmp and /var/tmp
        # (with the host's, shadowed beneath): the run directory, and QEMU's disks.
        # The runner's durable state too (disk.json), made by its ExecStartPre=.
        state = lab.tmp / "state" / lab.name / lab.hosts[h]
        assert writable("runner", state) and not writable("qemu", state), h
        for part, expected in (("qemu", {lab.run_dir(h), *disks}),
                               ("runner", {lab.run_dir(h), state})):  # fmt: skip
            mounts = inside(part, "findmnt", "-rno", "TARGET,OPTIONS").stdout.splitlines()
            rw = {t for t, _, o in (m.partition(" ") for m in mounts) if "rw" in o.split(",")}
            rw = {t for t in rw if t != "/proc" and not re.match(r"/(dev|tmp|var/tmp)(/|$)", t)}
            assert rw == {str(p) for p in expected}, (h, part)
        assert key not in inside("qemu", "cat", str(lab.key_file)).stdout, h
        assert key in inside("runner", "cat", str(lab.key_file)).stdout, h
        # Private /tmp and /dev: the host's files are not there; QEMU's devices are.
        sd.run("touch", "/tmp/colospec-host-tmp")
        for part in ("qemu", "runner"):
            assert "colospec-host-tmp" not in inside(part, "ls", "/tmp").stdout, (h, part)
        devices = inside("qemu", "ls", "/dev", "/dev/net").stdout.split()
        assert {"kvm", "tun", "null"} <= set(devices) and "console" not in devices, devices
        assert "kvm" not in inside("runner", "ls", "/dev").stdout.split(), h


def test_sandboxed_pair_outside_tmp_comes_up_fails_over_and_stops(outside_tmp, monkeypatch):
    """The whole flow above, with every unit in its full sandbox (private /tmp, /dev)."""
    monkeypatch.setattr(tempfile, "tempdir", str(outside_tmp))
    lab = PairLab(checkpoint_delay_ms=500)
    monkeypatch.undo()
    with lab:
        for h in ("a", "b"):
            qemu = (lab.host_dir(h) / "systemd" / f"colospec-{lab.name}-qemu.service").read_text()
            assert "PrivateTmp=yes\n" in qemu and "ProtectHome=yes\n" in qemu, h
        shared = [lab.tmp, ROOT]
        with SystemdHost(lab.ns["a"], shared) as a, SystemdHost(lab.ns["b"], shared) as b:
            hosts = {"a": a, "b": b}
            target = f"colospec-{lab.name}.target"
            try:
                for h, sd in hosts.items():
                    sd.install_units(sorted((lab.host_dir(h) / "systemd").iterdir()))
                with ThreadPoolExecutor(2) as pool:
                    starts = [pool.submit(sd.systemctl, "start", target, check=False)
                              for sd in hosts.values()]  # fmt: skip
                    assert all(s.result().returncode == 0 for s in starts), [
                        s.result().stderr for s in starts
                    ]
                check_sandbox(lab, hosts)
                check_pair_under_systemd(lab, hosts)  # its start finds both targets up
            except BaseException:
                for h, sd in hosts.items():
                    print(f"--- journal of host {h} ---\n{sd.journal()[-8000:]}")
                raise


def test_vmft_network_unit_makes_the_tap_and_the_ifb_redirect_in_its_sandbox(outside_tmp):
    """The vm-ft network unit: tap, ifb and tc through netlink with CAP_NET_ADMIN alone."""
    data = yaml.safe_load((ROOT / "examples/vm-ft-seed.yaml").read_text())
    data["runtime"] = {"artifacts_dir": str(outside_tmp / "etc")}
    pair = check_spec_data(data)
    write_tree(outside_tmp / "etc" / pair.name, render_pair(pair))
    host = pair.primary
    lay = pair.layout(host)
    unit = outside_tmp / "etc" / pair.name / host.name / "systemd" / lay.unit("network")
    assert "CapabilityBoundingSet=CAP_NET_ADMIN\n" in unit.read_text()
    with namespace() as ns, SystemdHost(ns, [outside_tmp, ROOT]) as sd:
        add_bridge(ns, host.bridge)
        sd.install_units([unit])
        try:
            sd.systemctl("start", lay.unit("network"))
            tap = ip("-d", "link", "show", host.tap, netns=ns).stdout
            assert f"master {host.bridge}" in tap and "tun type tap" in tap, tap
            assert ",UP" in ip("link", "show", "ifb0", netns=ns).stdout
            filters = subprocess.run(["tc", "-n", ns, "filter", "show", "dev", host.tap,
                                      "parent", "ffff:"], capture_output=True, text=True).stdout  # fmt: skip
            assert "mirred (Egress Redirect to device ifb0)" in filters, filters
            sd.systemctl("stop", lay.unit("network"))
            for dev in (host.tap, "ifb0"):
                assert ip("link", "show", dev, netns=ns, check=False).returncode != 0, dev
        except BaseException:
            print(sd.journal())
            raise


def test_vmft_qemu_unit_runs_its_tap_scripts_in_its_sandbox(outside_tmp):
    """vm-ft's QEMU runs Debian's /etc/qemu-ifup (`ip link set up`: netlink and
    CAP_NET_ADMIN) and /etc/qemu-ifdown in its sandbox; stock QEMU starts the vm-ft
    primary's command line."""
    data = yaml.safe_load((ROOT / "examples/vm-ft-seed.yaml").read_text())
    image = outside_tmp / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "16M"], check=True)
    data["qemu"]["binary"] = "/usr/bin/qemu-system-x86_64"
    data["vm"] |= {"memory_mib": 64, "cpus": 1, "disk": {"image": str(image), "format": "raw"}}
    data["runtime"] = {"artifacts_dir": str(outside_tmp / "etc")}
    pair = check_spec_data(data)
    write_tree(outside_tmp / "etc" / pair.name, render_pair(pair))
    host = pair.primary
    lay = pair.layout(host)
    unit_dir = outside_tmp / "etc" / pair.name / host.name / "systemd"
    units = [unit_dir / lay.unit(p) for p in ("disks", "network", "qemu")]
    assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_IPC_LOCK\n" in units[2].read_text()
    qemu = lay.unit("qemu")
    with namespace() as ns, SystemdHost(ns, [outside_tmp, ROOT]) as sd:
        add_bridge(ns, host.bridge, host.address)
        sd.install_units(units)
        try:
            sd.systemctl("start", qemu)
            time.sleep(2)  # a failed script ends QEMU at once
            assert sd.systemctl("is-active", qemu, check=False).stdout.strip() == "active"
            link = ip("link", "show", host.tap, netns=ns).stdout
            assert f"master {host.bridge}" in link and ",UP" in link, link
            sd.systemctl("stop", qemu)
            assert sd.systemctl("show", "-P", "Result", qemu).stdout.strip() == "success"
            journal = sd.journal(qemu)
            assert "qemu-ifup" in journal, journal  # it ran: it finds no default route here
            assert not re.search(r"not permitted|RTNETLINK|failed", journal), journal
        except BaseException:
            print(sd.journal())
            raise


def test_a_returning_host_joins_its_peer_under_systemd():
    """After a failover, `systemctl start` of the pair's target on the lost host joins the
    survivor: its runner starts the joining QEMU's unit (qemu-join), not the target's."""
    with PairLab(checkpoint_delay_ms=500, failover={"rejoin": "automatic"}) as lab:
        shared = [lab.tmp, ROOT]
        with SystemdHost(lab.ns["a"], shared) as a, SystemdHost(lab.ns["b"], shared) as b:
            hosts = {"a": a, "b": b}
            try:
                check_rejoin_under_systemd(lab, hosts)
            except BaseException:
                for h, sd in hosts.items():
                    print(f"--- journal of host {h} ---\n{sd.journal()[-8000:]}")
                raise


def check_rejoin_under_systemd(lab: PairLab, hosts: dict[str, SystemdHost]) -> None:
    target = f"colospec-{lab.name}.target"
    qemu, join = f"colospec-{lab.name}-qemu.service", f"colospec-{lab.name}-qemu-join.service"
    runner = f"colospec-{lab.name}-runner.service"
    units = {h: sorted((lab.host_dir(h) / "systemd").iterdir()) for h in hosts}
    for h, sd in hosts.items():
        sd.install_units(units[h])
    with ThreadPoolExecutor(2) as pool:
        starts = [pool.submit(sd.systemctl, "start", target, check=False, timeout=120)
                  for sd in hosts.values()]  # fmt: skip
        assert all(s.result().returncode == 0 for s in starts), [s.result() for s in starts]

    def status(h: str) -> dict:
        colospec = unit_commands(next(u for u in units[h] if u.name == runner), "ExecStart")[0][0]
        return json.loads(hosts[h].run(colospec, "status", "--json", str(lab.host_dir(h))).stdout)

    def active(h: str, unit: str) -> str:
        return hosts[h].systemctl("is-active", unit, check=False).stdout.strip()

    hosts["a"].systemctl("kill", "--signal=SIGKILL", qemu)
    lab.wait_for("b serves alone", lambda: status("b")["phase"] == "alone")
    lab.wait_for("a's runner to end", lambda: active("a", runner) in ("inactive", "failed"))

    # The operator starts the pair again on a: its target's QEMU comes up as primary, its
    # runner finds b serving and joins it through the join unit.
    done = hosts["a"].systemctl("start", target, check=False, timeout=180)
    assert done.returncode == 0, done.stderr

    def protected() -> bool:
        sa, sb = status("a"), status("b")
        return (sa["colo_mode"], sb["colo_mode"], sa["protected"], sb["protected"]) == (
            "secondary", "primary", True, True)  # fmt: skip

    lab.wait_for("a joins b", protected, timeout=120)
    assert (active("a", join), active("a", qemu)) == ("active", "inactive")
    assert status("a")["disk"] == {"epoch": 1, "stale": False}

    # The runner adopts the joined QEMU after its own restart, as any other. systemd
    # restarts the target with it (Requires=): that must not start the target's QEMU.
    def join_pid() -> str:
        return hosts["a"].systemctl("show", "-P", "MainPID", join).stdout.strip()

    joined = join_pid()
    hosts["a"].systemctl("kill", "--signal=SIGKILL", runner)
    lab.wait_for("systemd restarts a's runner", lambda: active("a", runner) == "active"
                 and status("a")["phase"] == "colo")  # fmt: skip
    time.sleep(2)  # past the target's restart and anything it starts
    assert (active("a", join), join_pid(), active("a", qemu)) == ("active", joined, "inactive")
    assert status("a")["colo_mode"] == "secondary" and status("b")["protected"]
    # Stopping the pair stops the join unit too.
    hosts["a"].systemctl("stop", target)
    lab.wait_for("a's units stop", lambda: {active("a", u) for u in (join, qemu, runner)}
                 <= {"inactive", "failed"})  # fmt: skip
