"""`cluster: {manager: pacemaker}`: OUT/<pair>/pacemaker/, loaded into a CIB and checked by
Pacemaker's own crm_verify; the plan's cluster section; the spec's diagnostics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COLOSPEC = [sys.executable, "-m", "colospec"]
needs_pacemaker = pytest.mark.skipif(
    shutil.which("crm_verify") is None, reason="needs pacemaker (README's test command)"
)


def spec(tmp_path: Path, name: str, hosts: tuple[str, str], **changes) -> Path:
    data = yaml.safe_load((ROOT / "examples/pair.yaml").read_text())
    data["name"] = name
    data["hosts"]["primary"]["name"], data["hosts"]["secondary"]["name"] = hosts
    data["cluster"] = {"manager": "pacemaker"}
    data |= changes
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def colospec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*COLOSPEC, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)  # fmt: skip


def build(tmp_path: Path, *specs: Path) -> Path:
    out = tmp_path / "out"
    done = colospec("build", *map(str, specs), "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_files_and_plan(tmp_path):
    out = build(tmp_path, spec(tmp_path, "web1", ("n1", "n2")))
    assert sorted(p.name for p in (out / "web1/pacemaker").iterdir()) == [
        "apply.sh",
        "cib-fragment.xml",
    ]
    assert os.access(out / "web1/pacemaker/apply.sh", os.X_OK)
    plan = json.loads((out / "web1/n2/plan.json").read_text())
    assert plan["cluster"] == {"manager": "pacemaker", "node": "n2", "peer_node": "n1"}


def test_without_cluster_nothing_changes(tmp_path):
    data = yaml.safe_load(spec(tmp_path, "web1", ("n1", "n2")).read_text())
    del data["cluster"]
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(data))
    out = build(tmp_path, plain)
    assert not (out / "web1/pacemaker").exists()
    assert "cluster" not in json.loads((out / "web1/n1/plan.json").read_text())


@needs_pacemaker
def test_two_pairs_on_three_nodes_pass_crm_verify(tmp_path):
    out = build(tmp_path, spec(tmp_path, "pa", ("n1", "n2")),
                spec(tmp_path, "pb", ("n2", "n3")))  # fmt: skip
    cib = tmp_path / "cib.xml"
    cib.write_text(subprocess.run(["cibadmin", "--empty"], capture_output=True, text=True,
                                  check=True).stdout)  # fmt: skip
    env = os.environ | {"CIB_file": str(cib)}
    # Fencing is the cluster's own choice (README); without it the scheduler starts nothing.
    subprocess.run(["crm_attribute", "-t", "crm_config", "-n", "stonith-enabled", "-v",
                    "false"], env=env, check=True, capture_output=True)  # fmt: skip
    for pair in ("pa", "pb"):
        done = subprocess.run([str(out / pair / "pacemaker/apply.sh")], env=env,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
    verify = subprocess.run(["crm_verify", "-V", "-x", str(cib)], capture_output=True,
                            text=True)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout + verify.stderr == ""  # no warning either
    text = cib.read_text()
    for rid in ("colospec-pa", "colospec-pb"):
        assert f'<clone id="{rid}">' in text
    # The scheduler on that CIB with three nodes online: each pair's instances only on its
    # two hosts, promoted where the spec's primary is.
    nodes = ["--node-up", "n1", "--node-up", "n2", "--node-up", "n3"]
    sim = subprocess.run(["crm_simulate", "-x", str(cib), "-S", "--quorum", "true", *nodes],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    result = sim.stdout.split("Revised Cluster Status")[-1]
    assert "Promoted: [ n1 ]" in result and "Unpromoted: [ n2 ]" in result
    assert "Promoted: [ n2 ]" in result and "Unpromoted: [ n3 ]" in result


def test_unknown_manager_is_a_positioned_diagnostic(tmp_path):
    path = spec(tmp_path, "web1", ("n1", "n2"), cluster={"manager": "kubernetes"})
    done = colospec("validate", str(path))
    assert done.returncode == 2
    assert f"{path}:" in done.stderr and "$.cluster.manager" in done.stderr


def test_vmft_under_pacemaker_is_refused(tmp_path):
    example = yaml.safe_load((ROOT / "examples/vm-ft-seed.yaml").read_text())
    example["cluster"] = {"manager": "pacemaker"}
    path = tmp_path / "vmft.yaml"
    path.write_text(yaml.safe_dump(example, sort_keys=False))
    done = colospec("validate", "--format", "json", str(path))
    assert done.returncode == 2
    rules = [d["rule"] for d in json.loads(done.stdout)["diagnostics"]]
    assert "cluster-not-for-vmft" in rules
