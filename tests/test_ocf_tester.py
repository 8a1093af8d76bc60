"""resource-agents' ocf-tester on the installed agent, driving one host of a real pair.

The other host's instance is started through the agent too; ocf-tester then starts,
promotes, demotes (the runner stops and rejoins as secondary), promotes again (the agent
asks the secondary to take over) and stops host A. Firmware-only guests under KVM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pairlab import ROOT, PairLab

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(shutil.which("ocf-tester") is None, reason="needs resource-agents"),
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]


def agent_env(lab: PairLab, host: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCF_")}
    return env | {
        "OCF_ROOT": "/usr/lib/ocf",
        "OCF_RESOURCE_INSTANCE": f"colospec-{lab.name}",
        "OCF_RESKEY_pair": lab.name,
        "OCF_RESKEY_node": lab.hosts[host],
        "OCF_RESKEY_artifacts_dir": str(lab.out),
        "OCF_RESKEY_log_dir": str(lab.tmp),
        "OCF_RESKEY_CRM_meta_timeout": "60000",
    }


@pytest.fixture
def lab_cleanup():
    paths: list[Path] = []
    yield paths
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def test_ocf_tester_passes(lab_cleanup):
    with PairLab(failover={"rejoin": "automatic"}) as lab:
        # ocf-tester runs meta-data as nobody: the agent must be reachable by anyone.
        root = Path(tempfile.mkdtemp(prefix="cs-ocf-"))
        root.chmod(0o755)
        lab_cleanup.append(root)
        subprocess.run([sys.executable, "-m", "colospec", "ocf", "install", "--root",
                        str(root)], check=True, cwd=ROOT)  # fmt: skip
        script = root / "colospec" / "pair"
        start_b = subprocess.run(["ip", "netns", "exec", lab.ns["b"], str(script), "start"],
                                 env=agent_env(lab, "b"), capture_output=True, text=True,
                                 timeout=90)  # fmt: skip
        assert start_b.returncode == 0, start_b.stderr
        params = []
        for key, value in (("pair", lab.name), ("node", "host-a"), ("artifacts_dir", lab.out),
                           ("log_dir", lab.tmp)):  # fmt: skip
            params += ["-o", f"{key}={value}"]
        done = subprocess.run(
            ["ip", "netns", "exec", lab.ns["a"], "ocf-tester", "-v", "-n",
             f"colospec-{lab.name}", *params, str(script)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        logs = "".join(p.read_text(errors="replace")[-4000:] for p in lab.tmp.glob("*.log"))
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs}"
        assert f"{script} passed all tests" in done.stdout
