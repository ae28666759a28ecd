#!/usr/bin/env bash
# An ARM (aarch64) Python with the box's runtimes, for `clinibox cpu-check --arm-python DIR`
# on an x86 workstation: QEMU's user-mode emulator runs it as a Cortex-A72 or a Neoverse-N1.
# Needs root (dpkg --add-architecture, apt-get) and the package registries, once.
#
#   arm64-python.sh DIR
#
# Result:
#   DIR/root/  Debian 12's Python 3.11 for arm64 and the libraries it loads (dpkg -x, not
#              installed: nothing of this machine changes but apt's list of architectures)
#   DIR/site/  aarch64 wheels of the box's dependencies and its openvino and tflite extras
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd -P)
DIR=${1:?usage: arm64-python.sh DIR}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
PIP=${PIP:-$REPO/.venv/bin/pip}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}

# Debian's arm64 Python, unpacked (apt-get download takes no dependencies: the list is
# python3.11's own, resolved by hand for bookworm)
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
fi
apt-get update -qq
packages=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1
          libstdc++6 zlib1g libexpat1 libffi8 libssl3 libsqlite3-0 libbz2-1.0 liblzma5
          libncursesw6 libtinfo6 libreadline8 libuuid1 libnsl2 libtirpc3 libcrypt1 libdb5.3
          libgdbm6 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2
          libkeyutils1)
debs=$(mktemp -d)
trap 'rm -rf "$debs"' EXIT
chmod 755 "$debs"
(cd "$debs" && apt-get download -qq "${packages[@]/%/:arm64}")
rm -rf "$DIR/root"
for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$DIR/root"
done
ln -sf python3.11 "$DIR/root/usr/bin/python3"

# the box's dependencies as aarch64 wheels (glibc up to Debian 12's 2.36)
mapfile -t requirements < <("$PYTHON" - "$REPO/pyproject.toml" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
for requirement in [*project["dependencies"], *extras["openvino"], *extras["tflite"]]:
    print(requirement)
EOF
)
platforms=(--platform manylinux2014_aarch64)
for minor in $(seq 17 36); do
    platforms+=(--platform "manylinux_2_${minor}_aarch64")
done
rm -rf "$DIR/site"
"$PIP" install -q --target "$DIR/site" --only-binary=:all: "${platforms[@]}" \
    --python-version 3.11 --implementation cp "${requirements[@]}"
echo "ARM Python in $DIR: clinibox cpu-check PACKAGE --arm-python $DIR"
