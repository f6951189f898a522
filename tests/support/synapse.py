"""A real Synapse on loopback, federating over TLS, for the federation acceptance tests.

Synapse comes from PyPI into a venv cached under ``~/.cache/conduwuit-tests`` (or
``$CONDUWUIT_TEST_SYNAPSE_VENV``), so only the first run pays for the install (about a
minute). Its server name is ``127.0.0.1:<port>``: an IP literal with a port, resolved
without DNS. The federation listener serves TLS with a trustme certificate; Synapse is
told not to verify ours and not to block loopback addresses.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import trustme

from conduwuit.protocol import signing
from tests.support.config import free_port

SYNAPSE_VERSION = "1.163.2"
DEFAULT_VENV = Path.home() / ".cache" / "conduwuit-tests" / f"synapse-{SYNAPSE_VERSION}-venv"


class SynapseUnavailable(Exception):
    """Synapse could not be installed (no network, no PyPI); the message says why."""


def synapse_python() -> Path:
    """The venv's python with matrix-synapse importable, installing it on first use."""
    venv = Path(os.environ.get("CONDUWUIT_TEST_SYNAPSE_VENV", DEFAULT_VENV))
    python = venv / "bin" / "python"
    if python.exists() and _importable(python):
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    partial = venv.with_name(venv.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True,
                       capture_output=True, timeout=300)
        result = subprocess.run(
            [str(partial / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
             f"matrix-synapse=={SYNAPSE_VERSION}"],
            capture_output=True, text=True, timeout=900,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SynapseUnavailable(f"creating the Synapse venv failed: {exc}") from None
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise SynapseUnavailable(f"pip install matrix-synapse=={SYNAPSE_VERSION} failed:\n{tail}")
    # venvs hard-code their path in scripts, but `python -m` works from the new name.
    shutil.rmtree(venv, ignore_errors=True)
    partial.rename(venv)
    if not _importable(python):
        raise SynapseUnavailable("matrix-synapse installed but cannot be imported")
    return python


def _importable(python: Path) -> bool:
    probe = subprocess.run([str(python), "-c", "import synapse.app.homeserver"],
                           capture_output=True, timeout=120)
    return probe.returncode == 0


class Synapse:
    """One Synapse process: ``start()``, use ``client_url`` / ``server_name``, ``stop()``."""

    def __init__(self, workdir: Path, python: Path, ca: trustme.CA, *,
                 presence: bool = False) -> None:
        self.dir = workdir
        self.presence = presence
        self.python = python
        self.fed_port = free_port()
        self.client_port = free_port()
        self.server_name = f"127.0.0.1:{self.fed_port}"
        self.client_url = f"http://127.0.0.1:{self.client_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_files(ca)

    def _write_files(self, ca: trustme.CA) -> None:
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(d / "tls.key"))
        cert.cert_chain_pems[0].write_to_path(str(d / "tls.crt"))
        key = signing.generate_signing_key("syn1")
        (d / "signing.key").write_text(signing.encode_signing_key(key) + "\n")
        (d / "log.yaml").write_text(
            "version: 1\n"
            "formatters: {f: {format: '%(asctime)s %(name)s %(levelname)s %(message)s'}}\n"
            f"handlers: {{file: {{class: logging.FileHandler, filename: '{d / 'synapse.log'}',"
            " formatter: f}}\n"
            "root: {level: INFO, handlers: [file]}\n"
            "disable_existing_loggers: false\n"
        )
        big = "{per_second: 1000000, burst_count: 1000000}"
        limits = "\n".join(f"{name}: {big}" for name in (
            "rc_message", "rc_registration", "rc_admin_redaction", "rc_joins_per_room",
            "rc_room_creation", "rc_profile",
        ))
        (d / "homeserver.yaml").write_text(f"""
server_name: "{self.server_name}"
pid_file: {d / "homeserver.pid"}
listeners:
  - port: {self.fed_port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    resources: [{{names: [federation, keys], compress: false}}]
  - port: {self.client_port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    resources: [{{names: [client], compress: false}}]
database:
  name: sqlite3
  args: {{database: {d / "homeserver.db"}}}
log_config: {d / "log.yaml"}
media_store_path: {d / "media"}
signing_key_path: {d / "signing.key"}
tls_certificate_path: {d / "tls.crt"}
tls_private_key_path: {d / "tls.key"}
federation_verify_certificates: false
ip_range_blacklist: []
federation_ip_range_blacklist: []
trusted_key_servers: []
suppress_key_server_warning: true
report_stats: false
enable_metrics: false
url_preview_enabled: false
macaroon_secret_key: "{secrets.token_hex(16)}"
form_secret: "{secrets.token_hex(16)}"
registration_shared_secret: "{secrets.token_hex(16)}"
enable_registration: true
enable_registration_without_verification: true
bcrypt_rounds: 4
presence:
  enabled: {"true" if self.presence else "false"}
rc_login:
  address: {big}
  account: {big}
  failed_attempts: {big}
rc_joins:
  local: {big}
  remote: {big}
rc_federation:
  window_size: 1000
  sleep_limit: 1000000
  sleep_delay: 1
  reject_limit: 1000000
  concurrent: 1000000
{limits}
""")

    def start(self, timeout: float = 120.0) -> None:
        out = (self.dir / "stdout.log").open("wb")
        self.proc = subprocess.Popen(
            [str(self.python), "-m", "synapse.app.homeserver", "-c",
             str(self.dir / "homeserver.yaml")],
            cwd=self.dir, stdout=out, stderr=subprocess.STDOUT,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"Synapse exited during startup:\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.client_url}/_matrix/client/versions", timeout=1)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"Synapse not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        parts = []
        for name in ("stdout.log", "synapse.log"):
            path = self.dir / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()
                parts.append(f"--- {name}\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)
