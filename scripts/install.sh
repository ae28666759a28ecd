#!/usr/bin/env bash
# Install clinibox on a box from an offline bundle (`make wheelhouse`), with no network.
#
#   install.sh [--wheelhouse BUNDLE] [--root DIR] [--extras openvino,tflite,live]
#              [--device auto|none|jetson|intel-npu] [--python PYTHON] [--no-enable]
#              [--trust-demo-key] [--install-fonts]
#   install.sh --switch-to VERSION [--root DIR] [--no-enable]      (go back to a kept version)
#
# BUNDLE is the folder `make wheelhouse` made (dist/clinibox-<version>-offline) or its
# .tar.gz; run from inside an unpacked bundle, the bundle is where this script lies.
# What it does (ROOT is / unless --root names a staging root for images and tests):
#   ROOT/opt/clinibox/<version>/   venv (pip --no-index from the bundle's wheels only),
#                                  models/ (signed packages, public keys), systemd/
#   ROOT/opt/clinibox/current      symlink to the version in use, switched atomically;
#                                  older versions stay for --switch-to
#   ROOT/usr/local/bin/clinibox    the command (runs the current version)
#   the service user (systemd-sysusers), /var/lib/clinibox (systemd-tmpfiles),
#   ROOT/etc/clinibox/clinibox.toml (written only when absent; checked either way),
#   units + drop-ins in ROOT/usr/local/lib/systemd/system, the udev rule in
#   ROOT/usr/local/lib/udev/rules.d; then enables the units (with root / and a running
#   systemd also reloads systemd and udev and (re)starts the services).
# Re-running it (same or newer bundle) is safe: the config is never overwritten.
# The Chinese PDF reports need a Chinese font from Debian (fonts-noto-cjk, or fonts-wqy-zenhei),
# which the bundle does not carry: without one the install says so (reports asked for in
# Chinese then come out in English); --install-fonts installs fonts-noto-cjk with apt-get from
# the box's own package sources (an image build, a local mirror), into / only.
# The box trusts no model signing key of its own until `clinibox provision` (or an edited
# [models] trusted_keys) gives it one; the DEMO-ONLY key, whose private half is public,
# is trusted only with --trust-demo-key (a demonstration box, never a clinic's).
set -euo pipefail

PREFIX_REL=/opt/clinibox
UNITS="clinibox.service clinibox-web.service clinibox-retention.service
clinibox-retention.timer clinibox-failure@.service clinibox-usb-import@.service
clinibox-software-update.path clinibox-software-update.service clinibox-software-assess.service
clinibox-clock.path clinibox-clock.service clinibox-learning.service"
ENABLE_UNITS="clinibox.service clinibox-web.service clinibox-retention.timer
clinibox-software-update.path clinibox-software-assess.service clinibox-clock.path"
RUNTIME_EXTRAS="openvino tflite live ocr records federated"

ROOT=/
BUNDLE=""
EXTRAS=""
DEVICE=auto
PYTHON=""
ENABLE=1
SWITCH_TO=""
TRUST_DEMO=false
INSTALL_FONTS=false
CJK_FONTS="usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --wheelhouse) BUNDLE=${2:?--wheelhouse needs a folder}; shift 2 ;;
        --root) ROOT=${2:?--root needs a folder}; shift 2 ;;
        --extras) EXTRAS=${2?--extras needs a list}; shift 2 ;;
        --device) DEVICE=${2:?--device needs a value}; shift 2 ;;
        --python) PYTHON=${2:?--python needs a path}; shift 2 ;;
        --no-enable) ENABLE=0; shift ;;
        --trust-demo-key) TRUST_DEMO=true; shift ;;
        --install-fonts) INSTALL_FONTS=true; shift ;;
        --switch-to) SWITCH_TO=${2:?--switch-to needs a version}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

case "$DEVICE" in auto|none|jetson|intel-npu) ;; *) die "--device: auto, none, jetson or intel-npu" ;; esac
mkdir -p "$ROOT"
ROOT=$(cd "$ROOT" && pwd -P)
R=${ROOT%/}                       # prefix for paths: "" when ROOT is /
PREFIX="$R$PREFIX_REL"
if [ "$R" = "" ] && [ "$(id -u)" != 0 ]; then
    die "installing into / needs root"
fi
for tool in systemd-sysusers systemd-tmpfiles systemctl sha256sum; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install systemd coreutils)"
done

systemd_running() { [ "$R" = "" ] && [ -d /run/systemd/system ]; }

# The config is checked by the version that will read it, before anything switches.
check_config() {  # VERSION_DIR CONFIG
    "$1/venv/bin/python" "$1/venv/bin/clinibox" config --check "$2" >/dev/null \
        || die "$2 is refused by clinibox $(cat "$1/VERSION"); nothing was switched"
}

switch_current() {  # VERSION
    ln -sfn "$1" "$PREFIX/.current.new"
    mv -Tf "$PREFIX/.current.new" "$PREFIX/current"
    say "$PREFIX_REL/current -> $1"
}

restart_services() {
    [ "$ENABLE" = 1 ] || return 0
    if systemd_running; then
        systemctl daemon-reload
        udevadm control --reload 2>/dev/null || true
        # shellcheck disable=SC2086
        systemctl enable $ENABLE_UNITS
        systemctl restart clinibox.service clinibox-web.service
        systemctl start clinibox-retention.timer
        say "services enabled and (re)started"
    else
        # no running systemd (image build, chroot, container): enable offline only
        # shellcheck disable=SC2086
        systemctl --root="$ROOT" --quiet enable $ENABLE_UNITS
        say "units enabled in $ROOT (they start at the next boot)"
    fi
}

# a software update being tried (clinibox software apply) ends first: switching now would be
# undone by its return, or by the next boot's check
if [ -e "$R/var/lib/clinibox-software/trial.json" ]; then
    die "a software update is being tried now (clinibox software status); run this again once it has ended"
fi

# -- going back to a kept version ----------------------------------------------------------
if [ -n "$SWITCH_TO" ]; then
    [ -x "$PREFIX/$SWITCH_TO/venv/bin/python" ] \
        || die "no installed version $SWITCH_TO under $PREFIX (have: $(ls "$PREFIX" | tr '\n' ' '))"
    if [ -e "$R/etc/clinibox/clinibox.toml" ]; then
        check_config "$PREFIX/$SWITCH_TO" "$R/etc/clinibox/clinibox.toml"
    fi
    switch_current "$SWITCH_TO"
    restart_services
    exit 0
fi

# -- the bundle ------------------------------------------------------------------------------
HERE=$(cd "$(dirname "$0")" && pwd -P)
WORK=$(mktemp -d)
STAGE=""
cleanup() { rm -rf "$WORK"; if [ -n "$STAGE" ]; then rm -rf "$STAGE"; fi; }
trap cleanup EXIT

if [ -z "$BUNDLE" ]; then
    [ -d "$HERE/wheels" ] || die "no --wheelhouse given and $HERE is not an offline bundle"
    BUNDLE=$HERE
elif [ -f "$BUNDLE" ]; then
    tar -xzf "$BUNDLE" -C "$WORK"
    BUNDLE=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d | head -n 1)
fi
BUNDLE=$(cd "$BUNDLE" && pwd -P)
[ -d "$BUNDLE/wheels" ] || die "$BUNDLE has no wheels/ folder: make it with 'make wheelhouse'"
if [ -f "$BUNDLE/SHA256SUMS" ]; then
    (cd "$BUNDLE" && sha256sum --quiet --strict -c SHA256SUMS) \
        || die "$BUNDLE does not match its SHA256SUMS (damaged or altered)"
    say "bundle checked against its SHA256SUMS"
else
    die "$BUNDLE has no SHA256SUMS"
fi

shopt -s nullglob
wheels=("$BUNDLE"/wheels/clinibox-*.whl)
[ "${#wheels[@]}" = 1 ] || die "expected one clinibox wheel in $BUNDLE/wheels, found ${#wheels[@]}"
VERSION=$(basename "${wheels[0]}" | cut -d- -f2)
pips=("$BUNDLE"/wheels/pip-*.whl)
[ "${#pips[@]}" -ge 1 ] || die "$BUNDLE/wheels has no pip wheel to install with"

spec="clinibox==$VERSION"
if [ -n "$EXTRAS" ]; then
    for extra in ${EXTRAS//,/ }; do
        case " $RUNTIME_EXTRAS " in
            *" $extra "*) ;;
            *) die "--extras: only runtime extras belong on a box ($RUNTIME_EXTRAS), not $extra" ;;
        esac
    done
    spec="clinibox[$EXTRAS]==$VERSION"
fi

# whether every user may reach and run $1: the service user runs the venv's interpreter, so a
# Python under a private folder (a pyenv or a venv in root's home) would leave a box whose
# services cannot start ("Permission denied")
others_can_run() {
    local path mode
    path=$(readlink -f "$1") || return 1
    while :; do
        mode=$(stat -c %A "$path") || return 1
        case "${mode:9:1}" in x|t) ;; *) return 1 ;; esac
        [ "$path" = / ] && return 0
        path=$(dirname "$path")
    done
}

if [ -z "$PYTHON" ]; then  # the system's Python first, then whatever the PATH names
    PYTHON=$(command -v /usr/bin/python3.11 || command -v /usr/bin/python3 \
             || command -v python3.11 || command -v python3 || true)
fi
[ -n "$PYTHON" ] || die "no python3 found (Debian: apt-get install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$PYTHON is older than Python 3.10"
others_can_run "$PYTHON" || die "$PYTHON ($(readlink -f "$PYTHON")) lies in a folder the \
service user clinibox cannot enter: its services could not start; give --python /usr/bin/python3"

# -- the versioned install, built aside and moved into place -------------------------------
mkdir -p "$PREFIX"
STAGE="$PREFIX/.staging-$VERSION.$$"
FINAL_REL="$PREFIX_REL/$VERSION"
say "installing clinibox $VERSION ($spec) into $R$FINAL_REL"
"$PYTHON" -m venv --without-pip "$STAGE/venv"
# offline: --no-index, only the bundle's wheels; no pip config or PIP_* variables apply
PIP_CONFIG_FILE=/dev/null "$STAGE/venv/bin/python" "${pips[0]}/pip" install --isolated \
    --no-index --find-links "$BUNDLE/wheels" --no-compile --no-cache-dir \
    --disable-pip-version-check --quiet "$spec"
# the native DICOM receiver, where this box has g++ and libdcmtk-dev (else pynetdicom receives)
if [ -x "$BUNDLE/build-receiver.sh" ]; then
    "$BUNDLE/build-receiver.sh" "$STAGE/venv/bin/clinibox-receiver" \
        "$BUNDLE/native/receiver/clinibox_receiver.cc"
fi
CONFIG="$R/etc/clinibox/clinibox.toml"
if [ -e "$CONFIG" ]; then  # an upgrade: the kept config must suit the new version
    check_config "$STAGE" "$CONFIG"
fi
# the venv was made at the staging path: make its scripts name the final one
grep -rlI --null -F "$STAGE" "$STAGE/venv/bin" "$STAGE/venv/pyvenv.cfg" \
    | xargs -0 -r sed -i "s|$STAGE|$FINAL_REL|g"
# byte-code compiled once, naming the final paths in tracebacks (the venv is read-only
# under the units, so Python could not write it later)
"$STAGE/venv/bin/python" -m compileall -q -j 0 -s "$STAGE" -p "$FINAL_REL" \
    "$STAGE/venv/lib" >/dev/null
cp -r "$BUNDLE/models" "$STAGE/models"
cp -r "$BUNDLE/systemd" "$STAGE/systemd"
cp "$BUNDLE/SHA256SUMS" "$STAGE/BUNDLE-SHA256SUMS"
echo "$VERSION" > "$STAGE/VERSION"
if [ -n "$(find "$STAGE/models" -name '*.pem' -print -quit)" ]; then
    die "the bundle carries a private key (*.pem) under models/: refusing to install it"
fi

# the installed runtime verifies every shipped package against the shipped keys
trust=()
for key in "$STAGE"/models/keys/*.pub; do trust+=(--trust "$key"); done
for manifest in "$STAGE"/models/*/*/manifest.json; do
    "$STAGE/venv/bin/python" "$STAGE/venv/bin/clinibox" model verify \
        "$(dirname "$manifest")" "${trust[@]}" >/dev/null \
        || die "model package $(dirname "$manifest") does not verify"
done

# -- service user, state folder, config ----------------------------------------------------
install -d -m 0755 "$R/etc" "$R/usr/local/bin" "$R/usr/local/lib/sysusers.d" \
    "$R/usr/local/lib/tmpfiles.d" "$R/usr/local/lib/systemd/system" \
    "$R/usr/local/lib/udev/rules.d"
install -m 0644 "$STAGE/systemd/sysusers.d/clinibox.conf" "$R/usr/local/lib/sysusers.d/"
install -m 0644 "$STAGE/systemd/tmpfiles.d/clinibox.conf" "$R/usr/local/lib/tmpfiles.d/"
systemd-sysusers --root="$ROOT" clinibox.conf
systemd-tmpfiles --root="$ROOT" --create clinibox.conf

if [ -e "$CONFIG" ]; then
    say "keeping the existing $CONFIG"
else
    keys=""
    for key in "$STAGE"/models/keys/*.pub; do
        case "$(basename "$key")" in DEMO-ONLY-*) continue ;; esac  # only with --trust-demo-key
        keys="$keys\"$PREFIX_REL/current/models/keys/$(basename "$key")\", "
    done
    [ "$TRUST_DEMO" = true ] && say "WARNING: --trust-demo-key: this box will run packages signed with the public DEMO-ONLY key (demonstrations only)"
    cat > "$WORK/clinibox.toml" <<EOF
# clinibox on this box, written once by install.sh (a later install never overwrites it).
# Every key with its default and meaning: clinibox config
[storage]
state_dir = "/var/lib/clinibox"

[models]
# packages shipped with the installed version; newer ones come with clinibox model install
dir = "$PREFIX_REL/current/models"
trusted_keys = [${keys%, }]
# the DEMO-ONLY key's private half is public: true only on a demonstration box
trust_demo_key = $TRUST_DEMO
EOF
    gid=$(awk -F: '$1 == "clinibox" { print $3 }' "$R/etc/group")
    install -m 0640 -o 0 -g "$gid" "$WORK/clinibox.toml" "$CONFIG"
    say "wrote $CONFIG"
    check_config "$STAGE" "$CONFIG"
fi

# -- switch ----------------------------------------------------------------------------------
replaced=""
if [ -e "$PREFIX/$VERSION" ]; then  # the same version again: replace it
    replaced="$PREFIX/.replaced-$VERSION.$$"
    mv "$PREFIX/$VERSION" "$replaced"
fi
mv "$STAGE" "$PREFIX/$VERSION"
STAGE=""
switch_current "$VERSION"
if [ -n "$replaced" ]; then
    rm -rf "$replaced"
fi

cat > "$WORK/clinibox" <<'EOF'
#!/bin/sh
# clinibox: runs the installed version, /opt/clinibox/current (written by install.sh).
# Paths are found from this file's own place, so an install under --root works too;
# `current` is resolved once, so a running process keeps its version when it switches.
# Without --config or $CLINIBOX_CONFIG it uses the box's config, if it may read it.
root="$(dirname "$(readlink -f "$0")")/../../.."
if [ -z "${CLINIBOX_CONFIG:-}" ] && [ -r "$root/etc/clinibox/clinibox.toml" ]; then
    CLINIBOX_CONFIG=$(readlink -f "$root/etc/clinibox/clinibox.toml")
    export CLINIBOX_CONFIG
fi
app="$(readlink -f "$root/opt/clinibox/current")/venv"
exec "$app/bin/python" "$app/bin/clinibox" "$@"
EOF
install -m 0755 "$WORK/clinibox" "$R/usr/local/bin/clinibox"

# -- units, drop-ins, udev rule ------------------------------------------------------------
UNIT_DIR="$R/usr/local/lib/systemd/system"
for unit in $UNITS; do
    install -m 0644 "$PREFIX/current/systemd/$unit" "$UNIT_DIR/$unit"
done
install -m 0644 "$PREFIX/current/systemd/udev/90-clinibox-usb-import.rules" \
    "$R/usr/local/lib/udev/rules.d/"

dropins=()
case ",$EXTRAS," in *,openvino,*) dropins+=(openvino) ;; esac
device=$DEVICE
if [ "$device" = auto ]; then
    device=none
    if [ "$R" = "" ] && { [ -e /dev/nvhost-ctrl ] || [ -e /dev/nvgpu/igpu0/ctrl ]; }; then
        device=jetson
    elif [ "$R" = "" ] && [ -e /dev/accel/accel0 ]; then
        device=intel-npu
    fi
fi
case ",$EXTRAS," in *,live,*) dropins+=(live-video) ;; esac
case "$device" in
    jetson) dropins+=(jetson-gpu) ;;
    intel-npu)
        case " ${dropins[*]-} " in *" openvino "*) ;; *) dropins+=(openvino) ;; esac
        dropins+=(intel-npu) ;;
esac
DROPIN_DIR="$UNIT_DIR/clinibox.service.d"
rm -f "$DROPIN_DIR"/50-*.conf
for name in "${dropins[@]}"; do
    install -d -m 0755 "$DROPIN_DIR"
    install -m 0644 "$PREFIX/current/systemd/dropins/$name.conf" "$DROPIN_DIR/50-$name.conf"
    say "drop-in clinibox.service.d/50-$name.conf"
done

# -- the Chinese font of the PDF reports (a Debian package, not in the bundle) --------------
cjk_font() {
    for font in $CJK_FONTS; do [ -f "$R/$font" ] && return 0; done
    return 1
}
if ! cjk_font && [ "$INSTALL_FONTS" = true ]; then
    if [ "$R" = "" ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            fonts-noto-cjk || say "WARNING: apt-get could not install fonts-noto-cjk"
    else
        say "WARNING: --install-fonts installs into / with apt-get only"
    fi
fi
if ! cjk_font; then
    say "WARNING: no Chinese font: PDF reports asked for in Chinese come out in English" \
        "(Debian: apt-get install fonts-noto-cjk, or install.sh --install-fonts)"
fi

if [ "$ENABLE" = 1 ]; then
    restart_services
fi
say "clinibox $VERSION installed; versions kept: $(cd "$PREFIX" && ls -d [0-9]* | tr '\n' ' ')"
say "next steps, in this order:"
say "  1. provision with the hospital's enrolment bundle:" \
    "sudo clinibox provision BUNDLE --config /etc/clinibox/clinibox.toml"
if [ "$TRUST_DEMO" = true ]; then
    say "  2. a model: this demonstration box (--trust-demo-key) runs the bundled demo package;" \
        "it is NOT for clinical use"
else
    say "  2. a model: a box provisioned for a hospital runs only packages signed by the" \
        "hospital's model-signing key; it waits for one (the hospital's rollout:" \
        "clinibox central rollout, or runuser -u clinibox -- clinibox model install PACKAGE)" \
        "and keeps receiving and holding images meanwhile"
fi
say "  3. check the box: runuser -u clinibox -- clinibox selftest"
say "  4. the viewer's first account:" \
    "runuser -u clinibox -- clinibox user add NAME --role technician"
