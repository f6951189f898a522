#!/usr/bin/env bash
# Build the Debian package: packaging/build-deb.sh [OUTPUT_DIR]   (default: dist/)
#
# The package carries conduwuit in its own virtual environment under /opt/conduwuit,
# built here with Debian's python3 (the venv's python links to /usr/bin/python3) and
# pip-installed from this source tree with its pinned dependencies.
#
# Architecture: several dependencies are compiled wheels (plyvel with LevelDB inside,
# orjson, PyNaCl, argon2-cffi, Pillow, brotli, zstandard), so the environment only runs
# on the architecture and Python minor version it was built for. The package says so:
# it is named conduwuit_<version>_<dpkg arch>.deb and depends on that python3 minor
# version, rather than claiming "_all" and failing at start on another machine.
# (Building the venv in postinst instead would need the network at install time.)
#
# Prints the path of the .deb on its last line.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$REPO/dist}"
PYTHON="${PYTHON:-/usr/bin/python3}"
PREFIX=/opt/conduwuit

command -v dpkg-deb >/dev/null || { echo "build-deb: dpkg-deb is missing (apt-get install dpkg)" >&2; exit 1; }
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
    || { echo "build-deb: $PYTHON cannot make a venv (apt-get install python3-venv)" >&2; exit 1; }

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -n1)"
ARCH="$(dpkg --print-architecture)"
PYMINOR="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
PYNEXT="$("$PYTHON" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"
VENV="$ROOT$PREFIX"

# 1. The environment. The source is copied so that the build leaves nothing in the tree.
mkdir -p "$WORK/src"
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/conduwuit" "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --no-compile --disable-pip-version-check \
    --no-warn-script-location "$WORK/src"
# Scripts and pyvenv.cfg name the staging directory; they must name /opt/conduwuit.
grep -rlI --null "$VENV" "$VENV/bin" "$VENV/pyvenv.cfg" | xargs -0 -r sed -i "s|$VENV|$PREFIX|g"
find "$VENV" -name __pycache__ -prune -exec rm -rf {} +   # compiled in postinst
rm -f "$VENV"/lib/python*/site-packages/conduwuit-*.dist-info/direct_url.json

# 2. The files around it.
install -D -m 0755 /dev/stdin "$ROOT/usr/sbin/conduwuit" <<'EOF'
#!/bin/sh
# conduwuit, from its own environment in /opt/conduwuit (Debian package).
exec /opt/conduwuit/bin/conduwuit "$@"
EOF
# The unit as shipped, but for the static user the package creates.
mkdir -p "$ROOT/lib/systemd/system"
sed -e 's/^DynamicUser=yes$/DynamicUser=no/' \
    -e 's|^# systemd unit for conduwuit installed with pip into /opt/conduwuit:$|# systemd unit of the conduwuit Debian package (user conduwuit, /opt/conduwuit).|' \
    "$REPO/packaging/conduwuit.service" > "$ROOT/lib/systemd/system/conduwuit.service"
grep -q '^DynamicUser=no$' "$ROOT/lib/systemd/system/conduwuit.service"
# The example config with the package's database path; server_name stays for the admin.
mkdir -p "$ROOT/etc/conduwuit"
sed 's|^#database_path = "./conduwuit-db"$|database_path = "/var/lib/conduwuit"|' \
    "$REPO/packaging/conduwuit-example.toml" > "$ROOT/etc/conduwuit/conduwuit.toml"
grep -q '^database_path = "/var/lib/conduwuit"$' "$ROOT/etc/conduwuit/conduwuit.toml"
install -D -m 0644 "$REPO/README.md" "$ROOT/usr/share/doc/conduwuit/README.md"
install -D -m 0644 /dev/stdin "$ROOT/usr/share/doc/conduwuit/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: conduwuit
License: Apache-2.0
Comment: The environment in /opt/conduwuit holds the project's Python dependencies,
 each under its own license (see their *.dist-info directories).
EOF

# 3. Control files.
mkdir -p "$ROOT/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "$REPO/packaging/debian/$script" "$ROOT/DEBIAN/$script"
done
echo /etc/conduwuit/conduwuit.toml > "$ROOT/DEBIAN/conffiles"
SIZE="$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)"
cat > "$ROOT/DEBIAN/control" <<EOF
Package: conduwuit
Version: $VERSION
Architecture: $ARCH
Maintainer: conduwuit developers <conduwuit@localhost>
Section: net
Priority: optional
Installed-Size: $SIZE
Depends: python3 (>= $PYMINOR), python3 (<< $PYNEXT), adduser
Description: Matrix homeserver on Trio structured concurrency
 A featureful Matrix homeserver compatible with conduwuit's configuration,
 running in its own Python environment under /opt/conduwuit as the
 conduwuit system user, with its database in /var/lib/conduwuit.
 Set server_name in /etc/conduwuit/conduwuit.toml, then start conduwuit.service.
EOF

mkdir -p "$OUT"
DEB="$OUT/conduwuit_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-xz}" --build "$ROOT" "$DEB" >/dev/null
echo "$DEB"
