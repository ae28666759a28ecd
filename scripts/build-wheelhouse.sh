#!/usr/bin/env bash
# Build the offline bundle a box is installed from (`make wheelhouse`). Needs network
# (the package registry), so it runs on a connected workstation, never on a box.
#
#   build-wheelhouse.sh [--extras openvino,tflite,live] [--platform TAG --python-version X.Y]
#                       [--python PYTHON] [--out DIR]
#
# --platform fetches binary wheels only, for that platform and --python-version (default
# 3.11); without it the wheels are for this machine (built from source where a project
# has no wheel). The tag names the newest glibc the box has, and the wheels for it or an
# older glibc are taken: manylinux_2_35_aarch64 for a Jetson (JetPack 6, Ubuntu 22.04),
# manylinux_2_36_aarch64 for Debian 12 on ARM.
# (manylinux2014_aarch64, glibc 2.17, finds no onnxruntime >= 1.20 for ARM.)
# Result, DIR defaulting to dist/clinibox-<version>-offline (and DIR.tar.gz next to it):
#   wheels/    the clinibox wheel, every runtime dependency (+ the extras), pip
#   models/    the signed model packages and public keys (never a private key)
#   systemd/   units, udev rule, sysusers.d, tmpfiles.d, drop-ins
#   install.sh scripts/install.sh;  README.txt;  SHA256SUMS of every file
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd -P)
RUNTIME_EXTRAS="openvino tflite live ocr records federated"
EXTRAS=""
PLATFORM=""
PYVER=3.11
PYTHON=""
OUT=""

die() { printf 'build-wheelhouse.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'build-wheelhouse.sh: %s\n' "$*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --extras) EXTRAS=${2?}; shift 2 ;;
        --platform) PLATFORM=${2?}; shift 2 ;;
        --python-version) PYVER=${2:?}; shift 2 ;;
        --python) PYTHON=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
                   exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done

if [ -z "$PYTHON" ]; then
    PYTHON=$(command -v python3.11 || command -v python3)
fi
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip"
for extra in ${EXTRAS//,/ }; do
    case " $RUNTIME_EXTRAS " in
        *" $extra "*) ;;
        *) die "--extras: only runtime extras go on a box ($RUNTIME_EXTRAS), not $extra" ;;
    esac
done

VERSION=$("$PYTHON" - "$REPO/pyproject.toml" <<'EOF'
import sys
import tomllib
with open(sys.argv[1], "rb") as handle:
    print(tomllib.load(handle)["project"]["version"])
EOF
)
OUT=${OUT:-$REPO/dist/clinibox-$VERSION-offline}
mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd -P)/$(basename "$OUT")
rm -rf "$OUT" "$OUT.tar.gz"
mkdir -p "$OUT/wheels"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# 1. the clinibox wheel, from a clean copy of the sources (no stale build/ or egg-info)
mkdir "$WORK/src"
cp "$REPO/pyproject.toml" "$REPO/README.md" "$WORK/src/"
# every package the box imports: the viewer's web foundations (webcore) and the phantoms of
# `clinibox demo-video` too (tests/integration/test_install_system.py holds the wheel to it);
# demo/ (the demo model's training) stays on the workstation
# every package the import contracts name (pyproject.toml, [tool.importlinter] root_packages)
packages=$("$PYTHON" - "$REPO/pyproject.toml" <<'PY'
import sys
import tomllib

names = tomllib.load(open(sys.argv[1], "rb"))["tool"]["importlinter"]["root_packages"]
print(" ".join(name for name in names if name != "demo"))
PY
)
for package in $packages; do
    cp -r "$REPO/$package" "$WORK/src/"
done
find "$WORK/src" -name __pycache__ -type d -prune -exec rm -rf {} +
if ! "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$OUT/wheels" "$WORK/src" \
        > "$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    die "building the clinibox wheel failed"
fi
wheel=$(ls "$OUT"/wheels/clinibox-"$VERSION"-*.whl)
spec=$wheel
if [ -n "$EXTRAS" ]; then
    spec="$wheel[$EXTRAS]"
fi

# 2. every runtime dependency (and pip, which install.sh installs with)
if [ -n "$PLATFORM" ]; then
    # pip takes a manylinux_2_NN tag literally: a box whose glibc is 2.NN also runs the
    # wheels of every older glibc (PEP 600), down to manylinux2014's 2.17, so each is named
    platforms=(--platform "$PLATFORM")
    if [[ "$PLATFORM" =~ ^manylinux_2_([0-9]+)_(.+)$ ]]; then
        for (( minor = BASH_REMATCH[1] - 1; minor >= 17; minor-- )); do
            platforms+=(--platform "manylinux_2_${minor}_${BASH_REMATCH[2]}")
        done
        platforms+=(--platform "manylinux2014_${BASH_REMATCH[2]}")
    fi
    "$PYTHON" -m pip download --quiet --dest "$OUT/wheels" --only-binary=:all: \
        "${platforms[@]}" --python-version "$PYVER" --implementation cp "$spec" pip
else
    "$PYTHON" -m pip wheel --quiet --wheel-dir "$OUT/wheels" "$spec" pip
fi

# 3. signed model packages and public keys only
mkdir -p "$OUT/models/keys"
cp "$REPO"/models/keys/*.pub "$OUT/models/keys/"
trust=()
for key in "$OUT"/models/keys/*.pub; do trust+=(--trust "$key"); done
for manifest in "$REPO"/models/*/*/manifest.json; do
    package=$(dirname "$manifest")
    relative=${package#"$REPO"/models/}
    mkdir -p "$OUT/models/$(dirname "$relative")"
    cp -r "$package" "$OUT/models/$relative"
    if "$PYTHON" -c 'import clinibox.table' 2>/dev/null; then
        "$PYTHON" -m clinibox model verify "$OUT/models/$relative" "${trust[@]}" \
            >/dev/null || die "model package $relative does not verify against models/keys"
    else
        say "note: $PYTHON cannot import clinibox; install.sh verifies $relative on the box"
    fi
done
find "$OUT/models" \( -name '*.pem' -o -name '__pycache__' \) -prune -exec rm -rf {} +

# 4. units and the installer
cp -r "$REPO/systemd" "$OUT/systemd"
install -m 0755 "$REPO/scripts/install.sh" "$OUT/install.sh"
# the native DICOM receiver's source: install.sh builds it on a box with g++ and libdcmtk-dev
install -m 0755 "$REPO/scripts/build-receiver.sh" "$OUT/build-receiver.sh"
mkdir -p "$OUT/native/receiver"
cp "$REPO/native/receiver/clinibox_receiver.cc" "$OUT/native/receiver/"
cat > "$OUT/README.txt" <<EOF
clinibox $VERSION, offline bundle$( [ -n "$PLATFORM" ] && printf ' for %s, Python %s' "$PLATFORM" "$PYVER")
Extras: ${EXTRAS:-none}. Built $(date -u +%Y-%m-%dT%H:%M:%SZ).

Install on the box (as root, no network needed):
    tar -xzf clinibox-$VERSION-offline.tar.gz
    clinibox-$VERSION-offline/install.sh ${EXTRAS:+--extras $EXTRAS}
Check the bundle first if it travelled:  sha256sum -c SHA256SUMS
The box needs: Python 3.10+ with venv (python3, python3-venv), systemd, util-linux.
Options: install.sh --help. What it does: systemd/README.md.
EOF

# 5. the manifest of every file, then the archive
(cd "$OUT" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort \
    | xargs -d '\n' sha256sum > SHA256SUMS)
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$(dirname "$OUT")" \
    -czf "$OUT.tar.gz" "$(basename "$OUT")"
say "$OUT ($(ls "$OUT/wheels" | wc -l) wheels) and $OUT.tar.gz"
