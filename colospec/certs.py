"""`colospec certs`: a pair CA and both hosts' certificates for security.tls.

Each host gets <dir>/<host>/ in QEMU's tls-creds-x509 layout: the CA's certificate, a
server certificate (its subject alternative names: the host's replication address, which
the peer dials and checks, and its name) and a client certificate, with their keys. The
CA signs these four and nothing else: its private key exists only while this command runs,
so no one can issue a certificate the pair would trust later (to renew or to replace a
host, make a new set for both hosts). certtool (GnuTLS, as QEMU uses) does the
cryptography; the tree is made in a temporary directory beside <dir> and renamed into
place, so an interrupted run leaves the previous certificates (or none).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from colospec.model import TLS_CA_CERT, Host, Pair
from colospec.writer import RENAME_EXCHANGE, _renameat2

CERTTOOL = "certtool"  # Debian: gnutls-bin
KEY_BITS = 3072  # RSA; GnuTLS's "high" security parameter
DEFAULT_DAYS = 3650
KEY_MODE, CERT_MODE, DIR_MODE = 0o600, 0o644, 0o700


class CertError(Exception):
    """Certificates could not be made; str() says why and what to do."""


def make_pair_certs(pair: Pair, target: Path, *, days: int = DEFAULT_DAYS,
                    force: bool = False) -> list[Path]:  # fmt: skip
    """Write target/<host>/ for both hosts; return those directories."""
    if shutil.which(CERTTOOL) is None:
        raise CertError("certtool is not installed — apt-get install gnutls-bin")
    if target.exists() and not force:
        raise CertError(f"{target} already exists — keep it, or pass --force to replace the "
                        "certificates of both hosts (copy them to both again)")  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.certs-", dir=target.parent))
    try:
        ca = work / ".ca"
        ca.mkdir(mode=DIR_MODE)
        _key(ca / "ca-key.pem")
        _run_certtool(["--generate-self-signed", "--load-privkey", str(ca / "ca-key.pem")],
                      ca / TLS_CA_CERT, _template(ca, "ca", [f'cn = "colospec {pair.name} CA"',
                      "ca", "cert_signing_key"], days))  # fmt: skip
        for host in pair.hosts:
            _host_certs(pair, host, work / host.name, ca, days)
        shutil.rmtree(ca)  # the CA's key: gone (module docstring)
        work.chmod(DIR_MODE)
        _put_in_place(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [target / host.name for host in pair.hosts]


def _host_certs(pair: Pair, host: Host, out: Path, ca: Path, days: int) -> None:
    out.mkdir(mode=DIR_MODE)
    shutil.copyfile(ca / TLS_CA_CERT, out / TLS_CA_CERT)
    (out / TLS_CA_CERT).chmod(CERT_MODE)
    subject = [f'organization = "colospec {pair.name}"', f'cn = "{host.name}"']
    usages = ["encryption_key", "signing_key"]
    ends = {
        # The peer's QEMU dials host.address and checks it against these names.
        "server": [*subject, f'ip_address = "{host.address}"', f'dns_name = "{host.name}"',
                   "tls_www_server", *usages],
        "client": [*subject, "tls_www_client", *usages],
    }  # fmt: skip
    for end, lines in ends.items():
        key = out / f"{end}-key.pem"
        _key(key)
        signed_by = ["--load-ca-certificate", str(ca / TLS_CA_CERT),
                     "--load-ca-privkey", str(ca / "ca-key.pem")]  # fmt: skip
        _run_certtool(["--generate-certificate", "--load-privkey", str(key), *signed_by],
                      out / f"{end}-cert.pem", _template(ca, end, lines, days))  # fmt: skip


def _template(where: Path, name: str, lines: list[str], days: int) -> Path:
    path = where / f"{name}.info"
    path.write_text("\n".join([*lines, f"expiration_days = {days}"]) + "\n")
    return path


def _key(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    os.close(fd)  # made 0600 before certtool writes the key into it
    _certtool(["--generate-privkey", "--key-type=rsa", f"--bits={KEY_BITS}", "--no-text",
               "--outfile", str(path)])  # fmt: skip


def _run_certtool(args: list[str], out: Path, template: Path) -> None:
    _certtool([*args, "--template", str(template), "--outfile", str(out)])
    out.chmod(CERT_MODE)


def _certtool(args: list[str]) -> None:
    done = subprocess.run([CERTTOOL, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    if done.returncode != 0:
        raise CertError(f"certtool {args[0]} failed: {done.stderr.strip() or done.stdout}")


def _put_in_place(work: Path, target: Path) -> None:
    if not target.exists():
        os.rename(work, target)
        return
    _renameat2(work, target, RENAME_EXCHANGE)  # work now holds the old tree: removed after
