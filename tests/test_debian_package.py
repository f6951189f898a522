"""The Debian package built by packaging/build-deb.sh, and the container file.

The .deb is built once for the module (about a minute: a venv with every pinned
dependency), then inspected with ``dpkg-deb``, unpacked into a scratch root, its
postinst run against that root with the user-management commands stubbed, and
the packaged ``conduwuit --version`` and server run from there.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config import free_port
from tests.support.process import REPO

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None,
                                reason="dpkg-deb is not installed")

VERSION = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M)
ARCH = (subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True)
        .stdout.strip() if shutil.which("dpkg") else "")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    done = subprocess.run(["bash", str(REPO / "packaging" / "build-deb.sh"), str(out)],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "DEB_COMPRESSION": "gzip"})
    assert done.returncode == 0, done.stderr[-4000:]
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def scratch(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    subprocess.run(["dpkg-deb", "-e", str(deb), str(root / "DEBIAN")], check=True)
    yield root


def test_name_and_control_fields(deb: Path) -> None:
    assert VERSION is not None
    # Compiled wheels inside: the architecture is named, not "all".
    assert deb.name == f"conduwuit_{VERSION.group(1)}_{ARCH}.deb"
    fields = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True,
                            check=True).stdout
    assert "Package: conduwuit\n" in fields
    assert f"Architecture: {ARCH}\n" in fields
    assert re.search(r"Depends: python3 \(>= 3\.\d+\), python3 \(<< 3\.\d+\), adduser", fields)


def test_contents_show_the_layout(deb: Path) -> None:
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True,
                             text=True, check=True).stdout
    paths = {line.split()[5].split(" -> ")[0] for line in listing.splitlines()}
    for wanted in ("./usr/sbin/conduwuit", "./opt/conduwuit/bin/conduwuit",
                   "./opt/conduwuit/bin/python3", "./opt/conduwuit/pyvenv.cfg",
                   "./lib/systemd/system/conduwuit.service", "./etc/conduwuit/conduwuit.toml",
                   "./usr/share/doc/conduwuit/copyright"):
        assert wanted in paths, wanted
    assert any(p.endswith("/site-packages/conduwuit/server.py") for p in paths)
    assert any("/site-packages/plyvel" in p for p in paths)
    assert not any("__pycache__" in p for p in paths)  # compiled by postinst
    assert re.search(r"root/root .* \./usr/sbin/conduwuit", listing)


def test_unpacked_files_name_the_installed_paths(scratch: Path) -> None:
    assert (scratch / "DEBIAN" / "conffiles").read_text().split() == [
        "/etc/conduwuit/conduwuit.toml"]
    assert os.readlink(scratch / "opt/conduwuit/bin/python3") == "/usr/bin/python3"
    assert (scratch / "opt/conduwuit/bin/conduwuit").read_text().startswith(
        "#!/opt/conduwuit/bin/python")
    assert "exec /opt/conduwuit/bin/conduwuit" in (scratch / "usr/sbin/conduwuit").read_text()
    # No trace of the build's staging directory anywhere it would matter.
    for path in [*(scratch / "opt/conduwuit/bin").iterdir(), scratch / "opt/conduwuit/pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink():
            assert "/tmp/" not in path.read_text(errors="replace"), path
    config = (scratch / "etc/conduwuit/conduwuit.toml").read_text()
    assert '\ndatabase_path = "/var/lib/conduwuit"\n' in config
    assert "\n#server_name =" in config  # the admin must choose it
    unit = (scratch / "lib/systemd/system/conduwuit.service").read_text()
    assert "\nDynamicUser=no\n" in unit and "\nUser=conduwuit\n" in unit
    assert "\nType=notify\n" in unit
    assert "\nExecReload=/bin/kill -USR1 $MAINPID\n" in unit


def _stubs(directory: Path, calls: Path) -> dict[str, str]:
    """Commands postinst must not run on the test machine, recording their arguments."""
    directory.mkdir(exist_ok=True)
    for name, status in (("getent", 2), ("adduser", 0), ("chown", 0), ("systemctl", 0)):
        stub = directory / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\nexit {status}\n')
        stub.chmod(0o755)
    return {**os.environ, "PATH": f"{directory}:{os.environ['PATH']}"}


def test_postinst_creates_user_and_database_directory(scratch: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    env = {**_stubs(tmp_path / "bin", calls), "DPKG_ROOT": str(scratch)}
    done = subprocess.run(["sh", str(scratch / "DEBIAN/postinst"), "configure", ""],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "set server_name in /etc/conduwuit/conduwuit.toml" in done.stdout
    log = calls.read_text().splitlines()
    assert "getent passwd conduwuit" in log
    assert any(line.startswith("adduser --system --group --home /var/lib/conduwuit")
               and line.endswith(" conduwuit") for line in log)
    assert f"chown conduwuit:conduwuit {scratch}/var/lib/conduwuit" in log
    assert f"chown root:conduwuit {scratch}/etc/conduwuit/conduwuit.toml" in log
    db = scratch / "var/lib/conduwuit"
    assert db.is_dir() and (db.stat().st_mode & 0o777) == 0o700
    assert (scratch / "etc/conduwuit/conduwuit.toml").stat().st_mode & 0o777 == 0o640
    assert list((scratch / "opt/conduwuit/lib").rglob("__pycache__/server.*.pyc"))
    # prerm removes what postinst compiled.
    subprocess.run(["sh", str(scratch / "DEBIAN/prerm"), "remove"], env=env, check=True)
    assert not list((scratch / "opt/conduwuit/lib").rglob("__pycache__"))


def _in_place(scratch: Path, *command: str) -> list[str]:
    """Run ``command`` with the scratch root's /opt/conduwuit mounted at /opt/conduwuit.

    A private mount namespace does that without touching the machine; where it is
    not allowed, the packaged venv's python runs the packaged script directly.
    """
    bind = ("mount -t tmpfs tmpfs /opt && mkdir /opt/conduwuit && "
            f'mount --bind "{scratch}/opt/conduwuit" /opt/conduwuit && exec "$@"')
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True) if shutil.which("unshare") else None
    if probe is not None and probe.returncode == 0:
        return ["unshare", "-m", "sh", "-c", bind, "sh", *command]
    venv = scratch / "opt/conduwuit"
    script = command[0].replace("/usr/sbin/conduwuit", "/opt/conduwuit/bin/conduwuit")
    return [str(venv / "bin/python3"), str(scratch) + script, *command[1:]]


def test_packaged_conduwuit_runs_its_version(scratch: Path) -> None:
    assert VERSION is not None
    done = subprocess.run(_in_place(scratch, f"{scratch}/usr/sbin/conduwuit", "--version"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"conduwuit {VERSION.group(1)}"


def test_packaged_server_starts_with_the_packaged_config(scratch: Path, tmp_path: Path) -> None:
    """The packaged config plus a server name (env) is enough: READY=1, then a clean stop."""
    notify_path = str(tmp_path / "notify.sock")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONDUWUIT_", "CONDUIT_", "PYTHON"))}
    env.update({"NOTIFY_SOCKET": notify_path, "CONDUWUIT_SERVER_NAME": "packaged.test",
                "CONDUWUIT_DATABASE_PATH": str(tmp_path / "db"),
                "CONDUWUIT_ADDRESS": "127.0.0.1", "CONDUWUIT_PORT": str(free_port())})
    command = _in_place(scratch, f"{scratch}/usr/sbin/conduwuit",
                        "-c", f"{scratch}/etc/conduwuit/conduwuit.toml")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(60)
        proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            lines: list[str] = []
            while "READY=1" not in lines:
                lines += notify.recv(65536).decode().split("\n")
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, output
    assert "for packaged.test listening on http://127.0.0.1:" in output
    assert "site-packages" not in output or "/opt/conduwuit" in output


# --- the container file ------------------------------------------------------------------


def test_containerfile_structure() -> None:
    """What a linter would insist on, checked without a builder."""
    text = (REPO / "packaging" / "Containerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines()
                    if line.strip() and not line.startswith((" ", "#"))]
    words = [i[0] for i in instructions]
    assert words[0] == "FROM"
    base = instructions[0][1]
    assert ":" in base and not base.endswith(":latest")
    assert "ADD" not in words  # COPY only: nothing fetched at build time
    users = [i[1].strip() for i in instructions if i[0] == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert words.index("USER") < words.index("ENTRYPOINT")
    assert 'VOLUME ["/var/lib/conduwuit"]' in text or "VOLUME /var/lib/conduwuit" in text
    assert "CONDUWUIT_DATABASE_PATH=/var/lib/conduwuit" in text
    assert 'CONDUWUIT_ADDRESS="0.0.0.0"' in text
    assert "HEALTHCHECK" in words
    assert "pip install --no-cache-dir" in text
    for copied in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for source in copied.split():
            if not source.startswith("--"):
                assert (REPO / source).exists(), source


def test_container_image_builds_when_a_builder_is_available(tmp_path: Path) -> None:
    builder = next((b for b in ("podman", "docker") if shutil.which(b)), None)
    if builder is None or subprocess.run([builder, "info"], capture_output=True).returncode:
        pytest.skip("no container builder with a running engine here; structure checked above")
    done = subprocess.run([builder, "build", "-f", "packaging/Containerfile", "-t",
                           "conduwuit-test", "."], cwd=REPO, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
