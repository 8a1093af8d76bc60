"""TLS without a pair: `colospec certs`, the runner's check of the certificate files, the
sandbox around them, and what TLS changes in the artifacts (the goldens of
tests/cases/tls.yaml show it whole; tests/test_tls_pair.py runs it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from colospec.model import TLS_KEYS
from colospec.render.systemd import FlavorUnits, sandboxes_for
from colospec.runner.tlsfiles import TlsFilesError, check_tls_dir

from conftest import ROOT, rendered

CASE = ROOT / "tests/cases/tls.yaml"
FILES = ["ca-cert.pem", "client-cert.pem", "client-key.pem", "server-cert.pem", "server-key.pem"]


def colospec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "colospec", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)  # fmt: skip


def spec_with(tmp_path: Path, **security) -> Path:
    data = yaml.safe_load(CASE.read_text())
    data["security"] = security
    data["runtime"] = {"artifacts_dir": str(tmp_path / "etc"), "state_dir": str(tmp_path / "st")}
    spec = tmp_path / "tls.yaml"
    spec.write_text(yaml.safe_dump(data))
    return spec


def certtool_info(path: Path) -> str:
    return subprocess.run(["certtool", "-i", "--infile", str(path)], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


def verified(ca: Path, cert: Path) -> bool:
    done = subprocess.run(["certtool", "--verify", "--load-ca-certificate", str(ca),
                           "--infile", str(cert)], capture_output=True, text=True)  # fmt: skip
    return done.returncode == 0


# ----- colospec certs ------------------------------------------------------------------


def test_certs_makes_both_hosts_directories_from_one_ca(tmp_path):
    spec = spec_with(tmp_path, tls={})
    done = colospec("certs", str(spec))
    assert done.returncode == 0, done.stderr
    top = tmp_path / "etc/tls1-tls"  # the default: beside the heartbeat key
    assert sorted(p.name for p in top.iterdir()) == ["ta", "tb"]  # the CA's key is gone
    for host, address, peer in (("ta", "10.60.0.1", "tb"), ("tb", "10.60.0.2", "ta")):
        d = top / host
        assert sorted(p.name for p in d.iterdir()) == FILES
        assert (d.stat().st_mode & 0o777) == 0o700
        for name in FILES:
            mode = (d / name).stat().st_mode & 0o777
            assert mode == (0o600 if name in TLS_KEYS else 0o644), name
        server = certtool_info(d / "server-cert.pem")
        assert f"IPAddress: {address}" in server and "TLS WWW Server" in server
        assert "TLS WWW Client" in certtool_info(d / "client-cert.pem")
        # Each host's CA certificate verifies the peer's certificates: one pair CA.
        for end in ("server", "client"):
            assert verified(d / "ca-cert.pem", top / peer / f"{end}-cert.pem")
    check_tls_dir({"dir": str(top / "ta"), "files": FILES, "private_keys": list(TLS_KEYS)})


def test_certs_never_replace_without_force_and_replace_whole_with_it(tmp_path):
    spec = spec_with(tmp_path, tls={"dir": str(tmp_path / "tls")})
    assert colospec("certs", str(spec)).returncode == 0
    ca = (tmp_path / "tls/ta/ca-cert.pem").read_bytes()
    again = colospec("certs", str(spec))
    assert again.returncode == 1 and "--force" in again.stderr
    assert (tmp_path / "tls/ta/ca-cert.pem").read_bytes() == ca
    assert colospec("certs", str(spec), "--force").returncode == 0
    assert (tmp_path / "tls/ta/ca-cert.pem").read_bytes() != ca  # a new CA for both hosts
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_certs_refuse_a_spec_without_tls_and_an_invalid_one(tmp_path):
    done = colospec("certs", str(spec_with(tmp_path)))
    assert done.returncode == 2 and "security.tls" in done.stderr
    done = colospec("certs", "tests/invalid/tls-vmft.yaml")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    done = colospec("certs", str(CASE), "--days", "0")
    assert done.returncode == 2 and "positive" in done.stderr


# ----- the runner's check ----------------------------------------------------------------


@pytest.fixture
def tls_dir(tmp_path) -> dict:
    spec = spec_with(tmp_path, tls={"dir": str(tmp_path / "tls")})
    assert colospec("certs", str(spec)).returncode == 0
    return {"dir": str(tmp_path / "tls/ta"), "files": FILES, "private_keys": list(TLS_KEYS)}


def test_a_complete_directory_passes_and_no_tls_is_no_check(tls_dir):
    check_tls_dir(tls_dir)
    check_tls_dir(None)


def test_a_missing_directory_or_file_says_how_to_make_it(tls_dir, tmp_path):
    with pytest.raises(TlsFilesError, match=r"TLS directory .* is missing — make them with"):
        check_tls_dir({**tls_dir, "dir": str(tmp_path / "nowhere")})
    Path(tls_dir["dir"], "client-cert.pem").unlink()
    with pytest.raises(TlsFilesError, match=r"client-cert\.pem is missing — .*colospec certs"):
        check_tls_dir(tls_dir)


def test_a_private_key_others_can_read_or_own_is_refused(tls_dir):
    key = Path(tls_dir["dir"], "server-key.pem")
    key.chmod(0o644)
    with pytest.raises(
        TlsFilesError, match=re.escape(f"readable by others (mode 0644) — chmod 600 {key}")
    ):
        check_tls_dir(tls_dir)
    key.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(key, 4242, -1)
        with pytest.raises(
            TlsFilesError, match=re.escape(f"belongs to uid 4242 — chown root {key}")
        ):
            check_tls_dir(tls_dir)


def test_run_refuses_before_anything_starts_when_the_certificates_are_missing(tmp_path):
    key = tmp_path / "pair.key"
    assert colospec("keygen", str(key)).returncode == 0
    spec = spec_with(tmp_path, key_file=str(key), tls={"dir": str(tmp_path / "tls")})
    assert colospec("build", str(spec), "-o", str(tmp_path / "out")).returncode == 0
    done = colospec("run", str(tmp_path / "out/tls1/ta"))
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"colospec: error: TLS directory {tmp_path}/tls/ta is missing — make them with "
        f"`colospec certs SPEC` and copy this host's directory to {tmp_path}/tls/ta"
    )
    assert not Path("/run/colospec/tls1").exists()  # nothing started, nothing made


# ----- what the artifacts say ------------------------------------------------------------


def test_only_qemu_and_the_runner_see_the_hosts_tls_directory():
    pair, _ = rendered(CASE)
    for host in pair.hosts:
        where = f"-/etc/colospec/tls1-tls/{host.name}"
        boxes = sandboxes_for(pair, host, FlavorUnits(join_argv=("qemu",)))
        assert {p for p, sb in boxes.items() if sb.tls_read_only == where} == {
            "qemu", "qemu-join", "runner"}  # fmt: skip
        assert {p for p, sb in boxes.items() if sb.tls_hidden == where} == {"disks", "network"}


def test_the_plan_names_the_files_and_asks_the_binary_for_tls_creds_x509():
    _, files = rendered(CASE)
    plan = json.loads(files["ta/plan.json"].text)
    assert plan["tls"] == {"dir": "/etc/colospec/tls1-tls/ta", "files": FILES,
                           "private_keys": list(TLS_KEYS)}  # fmt: skip
    assert "tls-creds-x509" in plan["qemu"]["requires"]["qom_types"]
    assert not any("-----BEGIN" in f.text for f in files.values())  # paths, never contents


def test_without_tls_no_artifact_mentions_it():
    _, files = rendered(ROOT / "examples/pair.yaml")
    assert not [rel for rel, f in files.items() if "tls" in f.text]
