"""A real Corosync + Pacemaker cluster of three nodes on one machine, running colospec pairs.

    LAN namespace: brlan (10.66.0.0/24: corosync's ring and the runners' LAN heartbeats)
      │             │             │
      n1 .11        n2 .12        n3 .13     each node: its own network namespace (br0 for
      └─ rep-pa ────┘└─ rep-pb ───┘          the guests' taps), and a PID + mount + UTS
         10.77.1.0/24   10.77.2.0/24         namespace whose init runs corosync + pacemakerd

Pair pa: n1 primary, n2 secondary; pair pb: n2 primary, n3 secondary. Firmware-only
guests under KVM with stock QEMU. The CIB is pre-seeded with both pairs' generated
fragments (OUT/<pair>/pacemaker/). Each node bind-mounts its own folders over /run,
Pacemaker's and Corosync's state and logs, and an OCF root holding the installed agent, so
nothing outside the lab's temporary folder is written. Killing a node's init kills every
process of that node (the kernel empties its PID namespace); its network namespace stays,
as a host whose kernel still answers would. close() removes everything, also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from colospec.runner import control

from netns import ip, kill_all_in, unique_name
from pairlab import become_subreaper, reap_orphans

ROOT = Path(__file__).resolve().parent.parent
COLOSPEC = [sys.executable, "-m", "colospec"]
NODES = ("n1", "n2", "n3")
LAN = {"n1": "10.66.0.11", "n2": "10.66.0.12", "n3": "10.66.0.13"}
# pair: (primary, secondary, replication subnet, heartbeat port, guest MAC)
PAIRS = {
    "pa": ("n1", "n2", "10.77.1", 8890, "52:54:00:c0:20:01"),
    "pb": ("n2", "n3", "10.77.2", 8891, "52:54:00:c0:20:02"),
}
TOKEN_MS = 1000  # the notes' short token: a lost node is noticed in about 2 s
OCF_PROVIDERS = ("heartbeat", "pacemaker")
SERVING_ALONE = ("alone", "resyncing")
LOG_STAMP = re.compile(
    r"^(\d\d:\d\d:\d\d\.\d{3}) "
)  # status phases of a runner serving without a peer

_INIT = r"""
set -u
mount --make-rprivate /
hostname "$NODE"
for d in run var/lib/pacemaker var/lib/corosync var/log/pacemaker var/log/corosync \
         etc/corosync usr/lib/ocf/resource.d; do
    mount --bind "$DIR/$d" "/$d"
done
mount -t tmpfs tmpfs /dev/shm
mkdir -p /run/crm
corosync -f -c /etc/corosync/corosync.conf >/var/log/corosync/stdout.log 2>&1 &
for _ in $(seq 100); do corosync-cfgtool -s >/dev/null 2>&1 && break; sleep 0.1; done
PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none pacemakerd \
    >/var/log/pacemaker/stdout.log 2>&1 &
while true; do wait; sleep 1; done
"""

_COROSYNC_CONF = """totem {{
    version: 2
    cluster_name: colospec-lab
    transport: knet
    token: {token}
    crypto_cipher: none
    crypto_hash: none
}}
nodelist {{
{nodes}
}}
quorum {{
    provider: corosync_votequorum
}}
logging {{
    to_logfile: yes
    logfile: /var/log/corosync/corosync.log
    to_syslog: no
    to_stderr: no
    timestamp: on
}}
"""


def promoted_on(mon_xml: str, rid: str) -> list[str]:
    """The nodes on which Pacemaker shows the clone's instance promoted (crm_mon XML)."""
    root = ET.fromstring(mon_xml)
    return [
        node.get("name")
        for clone in root.iter("clone")
        if clone.get("id") == rid
        for res in clone.iter("resource")
        if res.get("role") == "Promoted"
        for node in res.iter("node")
    ]


class ClusterLab:
    def __init__(self):
        self.name = unique_name("pcm")
        self.tmp = Path(tempfile.mkdtemp(prefix="cs-pcmk-"))
        self.tmp.chmod(0o755)  # the cluster's daemons run as hacluster
        self.ns = {n: f"{self.name}{n}"[:15] for n in (*NODES, "l")}
        self.out = self.tmp / "out"
        self.pairs = {p: f"{p}{self.name[3:]}"[:20] for p in PAIRS}  # unique pair names
        self.inits: dict[str, subprocess.Popen] = {}
        self.boots = dict.fromkeys(NODES, 0)

    # ----- set-up ---------------------------------------------------------------------------

    def __enter__(self) -> ClusterLab:
        become_subreaper()
        try:
            self._network()
            self._build()
            self._ocf_root()
            self._node_dirs()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _network(self) -> None:
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "add", ns], check=True)
            ip("link", "set", "lo", "up", netns=ns)
        lan = self.ns["l"]
        ip("link", "add", "brlan", "type", "bridge", netns=lan)
        ip("link", "set", "brlan", "up", netns=lan)
        for n in NODES:
            ns = self.ns[n]
            ip("link", "add", "br0", "type", "bridge", netns=ns)
            ip("addr", "add", f"{LAN[n]}/24", "dev", "br0", netns=ns)
            ip("link", "set", "br0", "up", netns=ns)
            ip("link", "add", "uplink", "netns", ns, "type", "veth", "peer", "name", f"lan-{n}",
               "netns", lan)  # fmt: skip
            ip("link", "set", "uplink", "master", "br0", "up", netns=ns)
            ip("link", "set", f"lan-{n}", "master", "brlan", "up", netns=lan)
        for pair, (a, b, subnet, _, _) in PAIRS.items():
            dev = f"rep-{pair}"
            ip("link", "add", dev, "netns", self.ns[a], "type", "veth", "peer", "name", dev,
               "netns", self.ns[b])  # fmt: skip
            for n, last in ((a, 2), (b, 3)):
                ip("addr", "add", f"{subnet}.{last}/24", "dev", dev, netns=self.ns[n])
                ip("link", "set", dev, "up", netns=self.ns[n])

    def _build(self) -> None:
        specs = []
        for pair, (a, b, subnet, hb_port, mac) in PAIRS.items():
            name = self.pairs[pair]
            images = {}
            for n in (a, b):
                images[n] = self.tmp / "disks" / f"{name}-{n}.raw"
                images[n].parent.mkdir(exist_ok=True)
                subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(images[n]), "64M"],
                               check=True)  # fmt: skip

            def host(n: str, last: int, images=images, subnet=subnet, tap=f"tap-{pair}"):
                return {"name": n, "address": f"{subnet}.{last}", "lan_address": LAN[n],
                        "bridge": "br0", "tap": tap, "scratch_dir": str(self.tmp / "scratch" / n),
                        "image": str(images[n])}  # fmt: skip

            key = self.tmp / f"{name}.key"
            subprocess.run([*COLOSPEC, "keygen", str(key)], check=True, capture_output=True,
                           cwd=ROOT)  # fmt: skip
            spec = {
                "apiVersion": "colospec/v1",
                "name": name,
                "qemu": {"binary": "/usr/bin/qemu-system-x86_64", "version": "7.2"},
                "vm": {"memory_mib": 128, "cpus": 1, "cpu": "qemu64", "accel": "kvm",
                       "disk": {"image": str(images[a])}, "nic": {"model": "e1000", "mac": mac}},
                "hosts": {"primary": host(a, 2), "secondary": host(b, 3)},
                "replication": {"checkpoint_delay_ms": 500, "ports": {
                    "migration": 8888, "nbd": 8889, "mirror": 9003, "compare": 9004,
                    "heartbeat": hb_port}},
                "failover": {"rejoin": "automatic"},
                "cluster": {"manager": "pacemaker"},
                "runtime": {"artifacts_dir": str(self.out), "state_dir": str(self.tmp / "state")},
                "security": {"key_file": str(key)},
            }  # fmt: skip
            path = self.tmp / f"{name}.yaml"
            path.write_text(yaml.safe_dump(spec))
            specs.append(str(path))
        done = subprocess.run([*COLOSPEC, "build", *specs, "-o", str(self.out)],
                              capture_output=True, text=True, cwd=ROOT)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"colospec build failed: {done.stderr}")

    def _ocf_root(self) -> None:
        """Pacemaker's agents, and ours installed beside them (the real /usr is not written)."""
        root = self.tmp / "ocf"
        root.mkdir()
        for provider in OCF_PROVIDERS:
            shutil.copytree(f"/usr/lib/ocf/resource.d/{provider}", root / provider,
                            symlinks=True)  # fmt: skip
        subprocess.run([*COLOSPEC, "ocf", "install", "--root", str(root)], check=True,
                       capture_output=True, cwd=ROOT)  # fmt: skip

    def _cib(self) -> str:
        cib = self.tmp / "cib-seed.xml"
        cib.write_text(subprocess.run(["cibadmin", "--empty"], capture_output=True, text=True,
                                      check=True).stdout)  # fmt: skip
        env = os.environ | {"CIB_file": str(cib)}

        def tool(*argv: str) -> None:
            subprocess.run(argv, env=env, check=True, capture_output=True)

        for name, value in (("stonith-enabled", "false"), ("dc-deadtime", "2s"),
                            ("cluster-recheck-interval", "30s")):  # fmt: skip
            tool("crm_attribute", "-t", "crm_config", "-n", name, "-v", value)
        for pair in self.pairs.values():
            tool(str(self.out / pair / "pacemaker/apply.sh"))
            tool("crm_resource", "-r", f"colospec-{pair}-runner", "--set-parameter", "log_dir",
                 "--parameter-value", str(self.tmp / "logs"))  # fmt: skip
        return cib.read_text()

    def _node_dirs(self) -> None:
        nodes = "\n".join(
            f"    node {{\n        ring0_addr: {LAN[n]}\n        name: {n}\n"
            f"        nodeid: {i}\n    }}"
            for i, n in enumerate(NODES, 1)
        )
        conf = _COROSYNC_CONF.format(token=TOKEN_MS, nodes=nodes)
        cib = self._cib()
        (self.tmp / "logs").mkdir()
        for n in NODES:
            d = self.node_dir(n)
            for sub in ("var/lib/corosync", "var/log/corosync", "etc/corosync"):
                (d / sub).mkdir(parents=True)
            (d / "etc/corosync/corosync.conf").write_text(conf)
            for sub in ("cib", "pengine", "blackbox", "cores"):
                (d / "var/lib/pacemaker" / sub).mkdir(parents=True)
            (d / "var/lib/pacemaker/cib/cib.xml").write_text(cib)
            (d / "var/log/pacemaker").mkdir(parents=True)
            for sub in ("var/lib/pacemaker", "var/log/pacemaker"):
                subprocess.run(["chown", "-R", "hacluster:haclient", str(d / sub)], check=True)
            (d / "var/lib/pacemaker/cib").chmod(0o750)
            (d / "usr/lib/ocf").mkdir(parents=True)
            (d / "usr/lib/ocf/resource.d").symlink_to(self.tmp / "ocf")

    def node_dir(self, n: str) -> Path:
        return self.tmp / "nodes" / n

    # ----- nodes ----------------------------------------------------------------------------

    def boot(self, n: str) -> None:
        """Start node n: a fresh /run, the same disks and cluster state."""
        d = self.node_dir(n)
        self.boots[n] += 1
        run = d / f"run-{self.boots[n]}"
        run.mkdir()
        with contextlib.suppress(FileNotFoundError):
            (d / "run").unlink()
        (d / "run").symlink_to(run)
        env = os.environ | {"NODE": n, "DIR": str(d)}
        log = (d / "init.log").open("ab")
        self.inits[n] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[n], "unshare", "-m", "-u", "-i", "-p", "-f",
             "--mount-proc", "--kill-child", "bash", "-c", _INIT],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def init_pid(self, n: str) -> int:
        """The node's PID 1, as this machine sees it (the child of unshare)."""
        unshare = self.inits[n].pid
        for _ in range(100):
            children = Path(f"/proc/{unshare}/task/{unshare}/children")
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                # ip netns exec execs unshare, which forks the init
                if pids:
                    return int(pids[0])
            time.sleep(0.05)
        raise RuntimeError(f"no init for {n}")

    def kill_node(self, n: str) -> float:
        os.kill(self.init_pid(n), signal.SIGKILL)  # the kernel kills its PID namespace
        t = time.monotonic()
        self.inits[n].wait(timeout=30)
        return t

    def isolate(self, n: str, cut: bool = True) -> None:
        """Node n off every network (LAN and its replication links), or back on."""
        devs = ["uplink"] + [f"rep-{p}" for p, spec in PAIRS.items() if n in spec[:2]]
        for dev in devs:
            ip("link", "set", dev, "down" if cut else "up", netns=self.ns[n])

    def on(self, n: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """A command inside node n (its network, PID and mount namespaces)."""
        return subprocess.run(
            ["nsenter", "-t", str(self.init_pid(n)), "-n", "-m", "-p", "-u", "-i", *argv],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def crm_mon(self, n: str) -> str:
        return self.on(n, "crm_mon", "-1", "--output-as", "xml").stdout

    # ----- pairs ----------------------------------------------------------------------------

    def host_dir(self, pair: str, n: str) -> Path:
        return self.out / self.pairs[pair] / n

    def status(self, pair: str, n: str) -> dict[str, Any] | None:
        """The runner's status, through the node's /run as this machine sees it."""
        run = self.node_dir(n) / "run" / "colospec" / self.pairs[pair] / n
        try:
            return asyncio.run(control.ask(run, {"cmd": "status"}, 5))
        except (OSError, ValueError, TimeoutError):
            return None

    def wait_for(self, what: str, predicate, timeout: float = 90, every: float = 0.05):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.describe()}")
            time.sleep(every)

    def logged_at(self, pair: str, n: str, text: str, since: datetime) -> datetime | None:
        """The stamp of the first line of that runner's log holding text, at or after since."""
        log = self.tmp / "logs" / f"{self.pairs[pair]}-{n}.log"
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            if text in line and (m := LOG_STAMP.match(line)):
                clock = datetime.strptime(m[1], "%H:%M:%S.%f").time()
                stamp = datetime.combine(since.date(), clock)
                if stamp < since - timedelta(hours=12):  # the run crossed midnight
                    stamp += timedelta(days=1)
                if stamp >= since:
                    return stamp
        return None

    def protected(self, pair: str) -> bool:
        a, b = PAIRS[pair][:2]
        return all((s := self.status(pair, n)) and s.get("protected") for n in (a, b))

    def describe(self) -> str:
        parts = []
        for log in sorted((self.tmp / "logs").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()
            parts.append(f"--- {log.name} ---\n" + "\n".join(lines[-40:]))
        for n in NODES:
            log = self.node_dir(n) / "var/log/pacemaker/pacemaker.log"
            agent = [line for line in (log.read_text(errors="replace").splitlines()
                     if log.exists() else []) if "colospec-ocf" in line]  # fmt: skip
            parts.append(f"--- agent on {n} ---\n" + "\n".join(agent[-15:]))
            with contextlib.suppress(Exception):
                if self.inits.get(n) and self.inits[n].poll() is None:
                    parts.append(f"--- crm_mon {n} ---\n{self.on(n, 'crm_mon', '-1').stdout}")
            for status in (self.status(p, n) for p in PAIRS):
                if status:
                    parts.append(f"{n}: {json.dumps(status)[:400]}")
        return "\n".join(parts)

    # ----- tear-down ------------------------------------------------------------------------

    def close(self) -> None:
        for proc in self.inits.values():
            if proc.poll() is None:
                with contextlib.suppress(Exception):
                    os.kill(self.init_pid_or_none(proc) or proc.pid, signal.SIGKILL)
        for ns in self.ns.values():
            kill_all_in(ns)
        for proc in self.inits.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        reap_orphans()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @staticmethod
    def init_pid_or_none(proc: subprocess.Popen) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
        return None
