"""The offline bundle (`make wheelhouse`) and scripts/install.sh, into a temporary root.

The bundle is built once per session (scripts/build-wheelhouse.sh, from the package
registry through pip's cache) and installed once with ``unshare --net``: in a network
namespace without any interface, so the install is offline by construction. The
appliance is then started from the installed virtual environment, as the unit starts
it, and must answer C-ECHO (dcmtk's echoscu) and say READY=1 on a notify socket.

systemd is not PID 1 here, so units cannot be started. What of a unit's sandbox can be
applied without it is applied to the started process: its system call filter and
MemoryDenyWriteExecute, rebuilt from the unit file with libseccomp (``UnitSandbox``).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib

from tests.integration.conftest import REPO, echoscu, to_toml, wait_for
from tests.packages import WHEEL_PACKAGES
from tests.ports import free_ports
from tests.provisioned_box import (
    assert_provisioned_for_the_service,
    box_root,
    hospital_bundle,
    service_ids,
)

pytestmark = pytest.mark.integration

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
BOX_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
_BUILT: dict[str, Path] = {}


# -- unit files and their sandbox --------------------------------------------------------------
def read_unit(path: Path, dropins: tuple[Path, ...] = ()) -> dict[str, list[tuple[str, str]]]:
    """``{section: [(key, value), …]}`` of a unit file and its drop-ins, in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    for part in (path, *dropins):
        current = ""
        for raw in part.read_text().splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                current = line[1:-1]
                sections.setdefault(current, [])
                continue
            key, _, value = line.partition("=")
            sections[current].append((key.strip(), value.strip()))
    return sections


def unit_values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    """Every value of ``key`` in ``section`` (an empty assignment resets the list)."""
    values: list[str] = []
    for name, value in unit.get(section, []):
        if name == key:
            values = [] if value == "" else [*values, value]
    return values


@functools.cache
def syscall_sets() -> dict[str, frozenset[str]]:
    """systemd's own system call sets (``systemd-analyze syscall-filter``), expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"],
                         capture_output=True, text=True, check=True).stdout
    raw: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            raw[current] = []
        elif line.strip() and not line.strip().startswith("#") and current:
            raw[current].append(line.strip())

    def expand(name: str) -> frozenset[str]:
        names: set[str] = set()
        for item in raw.get(name, []):
            names |= expand(item) if item.startswith("@") else {item}
        return frozenset(names)

    return {name: expand(name) for name in raw}


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class UnitSandbox:
    """A unit's SystemCallFilter= and MemoryDenyWriteExecute=, applied with libseccomp.

    systemd cannot start units here (it is not PID 1), so this rebuilds the two seccomp
    filters systemd would install, following systemd.exec(5): an allow list starts
    from @default, ``~`` entries remove calls, denied calls fail with
    SystemCallErrorNumber=; MemoryDenyWriteExecute= refuses mmap with PROT_WRITE and
    PROT_EXEC, mprotect/pkey_mprotect with PROT_EXEC and shmat with SHM_EXEC.
    Use ``apply`` as ``preexec_fn`` of the process to confine.
    """

    SCMP_ACT_ALLOW = 0x7FFF0000
    SCMP_CMP_MASKED_EQ = 7
    PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000

    def __init__(self, unit: Path, dropins: tuple[Path, ...] = ()) -> None:
        service = read_unit(unit, dropins)
        sets = syscall_sets()
        allowed = set(sets["@default"])
        filters = unit_values(service, "Service", "SystemCallFilter")
        for value in filters:
            names: set[str] = set()
            for item in value.lstrip("~").split():
                names |= sets[item] if item.startswith("@") else {item}
            allowed = allowed - names if value.startswith("~") else allowed | names
        self.filtered = bool(filters)
        error = (unit_values(service, "Service", "SystemCallErrorNumber") or ["EPERM"])[-1]
        self.errno = getattr(errno, error)
        mdwe = (unit_values(service, "Service", "MemoryDenyWriteExecute") or ["no"])[-1]
        self.deny_write_execute = mdwe in ("yes", "true", "1", "on")
        self.lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        self.lib.seccomp_init.restype = ctypes.c_void_p
        self.lib.seccomp_init.argtypes = [ctypes.c_uint32]
        self.lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32,
                                                    ctypes.c_int, ctypes.c_uint,
                                                    ctypes.c_void_p]
        self.lib.seccomp_load.argtypes = [ctypes.c_void_p]
        self.lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        resolve = self.lib.seccomp_syscall_resolve_name
        # resolved here, not in the child; names of other architectures resolve below 0
        self.allowed = sorted(n for n in (resolve(s.encode()) for s in allowed) if n >= 0)
        self.write_execute_rules = [
            (resolve(name.encode()), mask)
            for name, mask in (("mmap", self.PROT_WRITE | self.PROT_EXEC),
                               ("mprotect", self.PROT_EXEC), ("pkey_mprotect", self.PROT_EXEC),
                               ("shmat", self.SHM_EXEC))]

    def _errno_action(self) -> int:
        return 0x00050000 | self.errno

    def apply(self) -> None:
        """Install the filters in this process (they are inherited by its children)."""
        lib = self.lib
        if self.deny_write_execute:
            ctx = lib.seccomp_init(self.SCMP_ACT_ALLOW)
            for number, mask in self.write_execute_rules:
                condition = _ArgCmp(2, self.SCMP_CMP_MASKED_EQ, mask, mask)
                if lib.seccomp_rule_add_array(ctx, self._errno_action(), number, 1,
                                              ctypes.byref(condition)) != 0:
                    raise OSError("seccomp rule refused")
            if lib.seccomp_load(ctx) != 0:
                raise OSError("seccomp filter not loaded")
        if self.filtered:  # the allow list goes last: loading a filter needs seccomp(2)
            ctx = lib.seccomp_init(self._errno_action())
            for number in self.allowed:
                if lib.seccomp_rule_add_array(ctx, self.SCMP_ACT_ALLOW, number, 0, None) != 0:
                    raise OSError("seccomp rule refused")
            if lib.seccomp_load(ctx) != 0:
                raise OSError("seccomp filter not loaded")


# -- the bundle and the install, built once per session ----------------------------------------
def built_wheelhouse(factory: pytest.TempPathFactory) -> Path:
    """The offline bundle made by scripts/build-wheelhouse.sh (built once per session)."""
    if "wheelhouse" not in _BUILT:
        out = factory.mktemp("wheelhouse") / f"clinibox-{VERSION}-offline"
        result = subprocess.run(
            [str(REPO / "scripts" / "build-wheelhouse.sh"), "--python", sys.executable,
             "--out", str(out)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        _BUILT["wheelhouse"] = out
    return _BUILT["wheelhouse"]


def host_units_into(root: Path) -> None:
    """Give a staging root the OS's own units (targets) as a real image would have."""
    target = root / "usr" / "lib" / "systemd" / "system"
    if not target.exists():
        shutil.copytree("/usr/lib/systemd/system", target, symlinks=True)


def run_install(root: Path, bundle: Path, *args: str, offline: bool = True,
                check: bool = True) -> subprocess.CompletedProcess:
    """scripts/install.sh into ``root``; offline: in a network namespace with no network."""
    command = [str(REPO / "scripts" / "install.sh"), "--wheelhouse", str(bundle),
               "--root", str(root), "--python", BOX_PYTHON, *args]
    if offline:
        command = ["unshare", "--net", "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def assert_next_steps(output: str, demo: bool) -> None:
    """The installer ends with the technician's next steps, numbered, in their order."""
    lines = output.splitlines()
    start = lines.index("install.sh: next steps, in this order:")
    steps = lines[start + 1:]
    assert len(steps) == 4, output
    assert [line.split()[1] for line in steps] == ["1.", "2.", "3.", "4."]
    assert "sudo clinibox provision BUNDLE --config /etc/clinibox/clinibox.toml" in steps[0]
    if demo:
        assert "demo package" in steps[1] and "NOT for clinical use" in steps[1]
    else:
        assert "signed by the hospital's model-signing key" in steps[1]
        assert "clinibox central rollout" in steps[1] and "model install PACKAGE" in steps[1]
        assert "keeps receiving and holding images" in steps[1]
    assert steps[2].endswith("clinibox selftest")
    assert steps[3].endswith("clinibox user add NAME --role technician")


def installed_root(factory: pytest.TempPathFactory) -> Path:
    """A staging root with the bundle installed offline (once per session)."""
    if "root" not in _BUILT:
        root = factory.mktemp("installed-root")
        host_units_into(root)
        run_install(root, built_wheelhouse(factory))
        _BUILT["root"] = root
    return _BUILT["root"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The offline bundle."""
    return built_wheelhouse(tmp_path_factory)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The staging root the bundle was installed into."""
    return installed_root(tmp_path_factory)


# -- the bundle ----------------------------------------------------------------------------------
def test_bundle_holds_wheels_models_units_and_their_checksums(bundle):
    wheels = {p.name.split("-")[0].lower() for p in (bundle / "wheels").glob("*.whl")}
    assert {"clinibox", "onnxruntime", "numpy", "pydicom", "pynetdicom", "flask",
            "gunicorn", "pip"} <= wheels
    assert not wheels & {"torch", "openvino", "pytest", "ruff", "psycopg", "nncf"}
    assert (bundle / "models" / "clinibox-demo-lesion" / "1.0.0" / "manifest.json").exists()
    assert (bundle / "models" / "keys" / "DEMO-ONLY-model-signing.pub").exists()
    assert list(bundle.rglob("*.pem")) == []
    assert (bundle / "systemd" / "clinibox.service").exists()
    assert os.access(bundle / "install.sh", os.X_OK)
    assert os.access(bundle / "build-receiver.sh", os.X_OK)
    assert (bundle / "native" / "receiver" / "clinibox_receiver.cc").read_bytes() == \
        (REPO / "native" / "receiver" / "clinibox_receiver.cc").read_bytes()

    listed = {line.split("  ", 1)[1] for line in (bundle / "SHA256SUMS").read_text().splitlines()}
    files = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    assert listed == files - {"SHA256SUMS"}
    check = subprocess.run(["sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS"],
                           cwd=bundle, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    archive = subprocess.run(["tar", "-tzf", f"{bundle}.tar.gz"], capture_output=True,
                             text=True, check=True).stdout.split()
    assert f"{bundle.name}/wheels/clinibox-{VERSION}-py3-none-any.whl" in archive
    assert not [name for name in archive if name.endswith(".pem")]
    # the wheel holds every package the box imports (the import contracts' root packages but
    # the demo model's training): without webcore no installed viewer could start
    import zipfile

    [wheel] = (bundle / "wheels").glob(f"clinibox-{VERSION}-*.whl")
    roots = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
        "root_packages"]
    packed = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert set(roots) - {"demo"} <= packed, set(roots) - packed


def test_make_passes_box_options_only(tmp_path):
    def dry_run(*args: str) -> str:
        return subprocess.run(["make", "-n", "-C", str(REPO), *args], capture_output=True,
                              text=True, check=True).stdout

    plain = dry_run("wheelhouse")
    assert "scripts/build-wheelhouse.sh" in plain
    assert "--extras" not in plain and "--platform" not in plain  # not the dev venv's EXTRAS
    jetson = dry_run("wheelhouse", "EXTRAS=openvino", "PLATFORM=manylinux_2_35_aarch64",
                     "PYVER=3.11")
    assert "--extras openvino" in jetson
    assert "--platform manylinux_2_35_aarch64 --python-version 3.11" in jetson
    install = dry_run("install-system", f"ROOT={tmp_path}", "NO_ENABLE=1", "DEVICE=none")
    assert "scripts/install.sh --wheelhouse" in install
    assert f"--root {tmp_path}" in install and "--no-enable" in install
    assert "--device none" in install


# -- the install ---------------------------------------------------------------------------------
def test_install_lays_out_the_box(root):
    prefix = root / "opt" / "clinibox"
    assert os.readlink(prefix / "current") == VERSION
    assert (prefix / VERSION / "VERSION").read_text().strip() == VERSION
    # built on the box (CI installs g++ and libdcmtk-dev, as a technician would)
    assert os.access(prefix / VERSION / "venv" / "bin" / "clinibox-receiver", os.X_OK)
    passwd = {line.split(":")[0]: line.split(":") for line in
              (root / "etc" / "passwd").read_text().splitlines()}
    uid, gid = int(passwd["clinibox"][2]), int(passwd["clinibox"][3])
    assert passwd["clinibox"][6] == "/usr/sbin/nologin"
    for folder in ("var/lib/clinibox", "var/lib/clinibox/import"):
        info = (root / folder).stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (uid, gid, 0o750)
    config = root / "etc" / "clinibox" / "clinibox.toml"
    assert (config.stat().st_mode & 0o777, config.stat().st_gid) == (0o640, gid)
    values = tomllib.loads(config.read_text())
    assert values["storage"]["state_dir"] == "/var/lib/clinibox"
    assert values["models"]["dir"] == "/opt/clinibox/current/models"
    # no demo key: an installed box trusts only keys provisioning gives it
    assert values["models"]["trusted_keys"] == []
    assert values["models"]["trust_demo_key"] is False
    assert list(root.rglob("*.pem")) == []

    units = root / "usr" / "local" / "lib" / "systemd" / "system"
    for unit in ("clinibox.service", "clinibox-web.service", "clinibox-retention.service",
                 "clinibox-retention.timer", "clinibox-failure@.service",
                 "clinibox-usb-import@.service", "clinibox-learning.service"):
        assert (units / unit).read_text() == (REPO / "systemd" / unit).read_text()
    assert (root / "usr/local/lib/udev/rules.d/90-clinibox-usb-import.rules").exists()
    assert not (units / "clinibox.service.d").exists()  # no extras, no device: no drop-in
    wants = root / "etc" / "systemd" / "system"
    assert os.readlink(wants / "multi-user.target.wants" / "clinibox.service") == \
        "/usr/local/lib/systemd/system/clinibox.service"
    assert (wants / "multi-user.target.wants" / "clinibox-web.service").is_symlink()
    assert (wants / "timers.target.wants" / "clinibox-retention.timer").is_symlink()
    # federated fine-tuning is installed, never enabled by the install (the hospital asks)
    assert not (wants / "multi-user.target.wants" / "clinibox-learning.service").exists()


def test_install_is_relocated_and_offline(root, bundle):
    venv = root / "opt" / "clinibox" / VERSION / "venv"
    assert (venv / "bin" / "clinibox").read_text().splitlines()[0] == \
        f"#!/opt/clinibox/{VERSION}/venv/bin/python"
    leaks = subprocess.run(["grep", "-rlF", str(root), str(root / "opt")],
                           capture_output=True, text=True)
    assert leaks.stdout == "", "files name the staging root:\n" + leaks.stdout
    assert list(venv.rglob("*.pyc")), "byte code was compiled at install time"
    listing = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c",
         "import importlib.metadata as m; print('\\n'.join(f'{d.name} {d.version}' "
         "for d in m.distributions()))"], capture_output=True, text=True, check=True).stdout
    wheels = {(w.name.split("-")[0].lower().replace("_", "-"), w.name.split("-")[1])
              for w in (bundle / "wheels").glob("*.whl")}
    installed = {(name.lower().replace("_", "-"), version)
                 for name, version in (line.split() for line in listing.splitlines())}
    assert ("clinibox", VERSION) in installed
    assert installed <= wheels, installed - wheels  # everything came from the bundle
    assert not any(name == "pip" for name, _ in installed)  # nothing to install with later


def test_installed_command_checks_its_config(root, tmp_path):
    wrapper = root / "usr" / "local" / "bin" / "clinibox"
    result = subprocess.run([str(wrapper), "config", "--check",
                             str(root / "etc" / "clinibox" / "clinibox.toml")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stderr
    # without --config the command reads the box's config (reading only: no state made)
    env = {k: v for k, v in os.environ.items() if k != "CLINIBOX_CONFIG"}
    listing = subprocess.run([str(wrapper), "model", "list"], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path, env=env)
    assert "no model packages under /opt/clinibox/current/models" in listing.stdout


def _rebuilt_bundle(bundle: Path, version: str, out: Path) -> Path:
    """A copy of the bundle whose clinibox wheel says ``version`` (an upgrade to install)."""
    source = out / "src"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in WHEEL_PACKAGES:
        shutil.copytree(REPO / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = source / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'version = "{VERSION}"',
                                                       f'version = "{version}"', 1))
    copy = out / f"clinibox-{version}-offline"
    shutil.copytree(bundle, copy)
    (copy / "wheels" / f"clinibox-{VERSION}-py3-none-any.whl").unlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(copy / "wheels"), str(source)],
                   check=True, capture_output=True, timeout=300)
    files = sorted(str(p.relative_to(copy)) for p in copy.rglob("*")
                   if p.is_file() and p.name != "SHA256SUMS")
    sums = subprocess.run(["sha256sum", *files], cwd=copy, capture_output=True, text=True,
                          check=True).stdout
    (copy / "SHA256SUMS").write_text(sums)
    return copy


def test_upgrade_keeps_config_and_old_version_and_can_go_back(bundle, tmp_path):
    target = tmp_path / "root"
    host_units_into(target)
    # an Intel NPU machine: OpenVINO's drop-in and the NPU's device (docs/technician/install.md)
    installed = run_install(target, bundle, "--no-enable", "--device", "intel-npu")
    assert_next_steps(installed.stdout, demo=False)
    prefix, config = target / "opt" / "clinibox", target / "etc" / "clinibox" / "clinibox.toml"
    dropins = target / "usr" / "local" / "lib" / "systemd" / "system" / "clinibox.service.d"
    assert sorted(p.name for p in dropins.iterdir()) == ["50-intel-npu.conf", "50-openvino.conf"]
    newer = _rebuilt_bundle(bundle, "0.1.1", tmp_path / "newer")

    # a config the new version refuses: nothing is switched, nothing is left behind
    good = config.read_text()
    config.write_text(good + "\n[dicom]\nportt = 104\n")
    refused = run_install(target, newer, "--no-enable", check=False)
    assert refused.returncode != 0 and "portt" in refused.stdout + refused.stderr
    assert os.readlink(prefix / "current") == VERSION
    assert sorted(p.name for p in prefix.iterdir()) == [VERSION, "current"]

    config.write_text(good + "# edited by the technician\n")
    # the same disk moved to a Jetson: its GPU's drop-in instead, nothing of the NPU left
    run_install(target, newer, "--no-enable", "--device", "jetson")
    assert sorted(p.name for p in dropins.iterdir()) == ["50-jetson-gpu.conf"]
    assert os.readlink(prefix / "current") == "0.1.1"
    assert (prefix / VERSION / "venv" / "bin" / "python").exists()  # kept for going back
    assert config.read_text() == good + "# edited by the technician\n"
    version = subprocess.run([str(prefix / "current" / "venv" / "bin" / "python"), "-I", "-c",
                              "import importlib.metadata as m; print(m.version('clinibox'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "0.1.1"

    subprocess.run([str(REPO / "scripts" / "install.sh"), "--root", str(target),
                    "--switch-to", VERSION, "--no-enable"], check=True, capture_output=True)
    assert os.readlink(prefix / "current") == VERSION
    bad = subprocess.run([str(REPO / "scripts" / "install.sh"), "--root", str(target),
                          "--switch-to", "9.9.9"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no installed version 9.9.9" in bad.stderr


def test_install_refuses_a_bundle_that_does_not_match_its_checksums(bundle, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    readme = damaged / "README.txt"
    readme.write_text(readme.read_text() + "tampered\n")
    result = run_install(tmp_path / "root", damaged, check=False)
    assert result.returncode != 0 and "SHA256SUMS" in result.stderr
    assert not (tmp_path / "root" / "opt").exists()


@pytest.mark.slow
def test_root_provisions_the_installed_box_as_the_technician_page_says(root, tmp_path):
    # sudo clinibox provision BUNDLE --config /etc/clinibox/clinibox.toml, by the installed
    # command, on the config folder and state folder as install.sh made them (copied with
    # their owners and modes into a box of its own, whose state folder the config names)
    bundle = hospital_bundle(tmp_path / "hospital")
    with box_root() as box:
        for part in ("etc", "var/lib"):
            (box / part).mkdir(parents=True)
            subprocess.run(["cp", "-a", str(root / part / "clinibox"), str(box / part)],
                           check=True)
        config = box / "etc" / "clinibox" / "clinibox.toml"
        with config.open("r+") as text:  # the same file: its owner and mode stay
            edited = text.read().replace('state_dir = "/var/lib/clinibox"',
                                         f'state_dir = "{box}/var/lib/clinibox"')
            text.seek(0)
            text.write(edited)
            text.truncate()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLINIBOX_", "PIP_"))}
        done = subprocess.run([str(root / "usr" / "local" / "bin" / "clinibox"), "provision",
                               str(bundle), "--config", str(config)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert_provisioned_for_the_service(config, service_ids(root))
        assert "systemctl restart clinibox clinibox-web" in done.stdout


# -- the installed appliance ---------------------------------------------------------------------
def _datagrams(sock: socket.socket) -> Iterator[tuple[str, int]]:
    """(message, sender pid) of each datagram waiting on a SO_PASSCRED socket."""
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except BlockingIOError:
            return
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        yield data.decode(), pid


def test_an_installed_box_refuses_the_demo_package_until_told_it_is_a_demo(root, bundle,
                                                                          tmp_path):
    installed = tomllib.loads((root / "etc" / "clinibox" / "clinibox.toml").read_text())
    config = tmp_path / "box.toml"
    config.write_text(to_toml({"storage": {"state_dir": str(tmp_path / "state")},
                               "models": {"dir": f"{root}{installed['models']['dir']}",
                                          "trusted_keys": installed["models"]["trusted_keys"],
                                          "trust_demo_key": installed["models"]
                                          ["trust_demo_key"]}}))
    clinibox = root / "usr" / "local" / "bin" / "clinibox"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLINIBOX_", "PIP_"))}
    checked = subprocess.run([str(clinibox), "selftest", "--config", str(config)], env=env,
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 1
    assert "signed with the DEMO-ONLY key, which this box does not trust" in checked.stdout
    assert re.search(r"signing keys\s+FAIL\s+no key is trusted", checked.stdout)
    demo = tmp_path / "demo-root"
    host_units_into(demo)
    assert_next_steps(run_install(demo, bundle, "--no-enable", "--trust-demo-key").stdout,
                      demo=True)
    values = tomllib.loads((demo / "etc" / "clinibox" / "clinibox.toml").read_text())
    assert values["models"]["trust_demo_key"] is True and values["models"]["trusted_keys"] == []


def test_installed_appliance_starts_under_its_sandbox_and_notifies(root, tmp_path):
    installed = tomllib.loads((root / "etc" / "clinibox" / "clinibox.toml").read_text())
    port, web_port = free_ports(2)
    config = tmp_path / "box.toml"
    config.write_text(to_toml({
        "storage": {"state_dir": str(tmp_path / "state")},
        # a demonstration box (install.sh --trust-demo-key) runs the bundled demo package
        "models": {"dir": f"{root}{installed['models']['dir']}", "trust_demo_key": True},
        "dicom": {"port": port, "host": "127.0.0.1"},
        "usb": {"watch_dir": str(tmp_path / "import"), "poll_seconds": 0.2},
        "web": {"enabled": False, "port": web_port, "host": "127.0.0.1"},
    }))
    unit = read_unit(root / "usr/local/lib/systemd/system/clinibox.service")
    exec_start = unit_values(unit, "Service", "ExecStart")[0].split()
    assert exec_start[0] == "/usr/local/bin/clinibox"
    sandbox = UnitSandbox(root / "usr/local/lib/systemd/system/clinibox.service")
    assert sandbox.filtered and sandbox.deny_write_execute

    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        notify.setblocking(False)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLINIBOX_", "PIP_"))}
        env.update(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="2000000",
                   CLINIBOX_CONFIG=str(config), CLINIBOX_RUNTIME_DIR=str(tmp_path))
        log = tmp_path / "serve.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [str(root / exec_start[0].lstrip("/")), *exec_start[1:]], env=env,
                stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path,
                preexec_fn=sandbox.apply)
        received: list[tuple[str, int]] = []

        def saw(field: str) -> bool:
            if process.poll() is not None:
                pytest.fail(f"clinibox serve exited {process.returncode}:\n"
                            f"{log.read_text()[-4000:]}")
            received.extend(_datagrams(notify))
            return any(field in message.split("\n") for message, _ in received)

        try:
            wait_for(lambda: saw("READY=1"), 120, "READY=1 on the notify socket")
            assert echoscu(port)
            wait_for(lambda: saw("WATCHDOG=1"), 10, "WATCHDOG=1 (WATCHDOG_USEC is 2 s)")
            # NotifyAccess=main: every message comes from the main process, which the
            # wrapper in /usr/local/bin replaced with exec
            assert {pid for _, pid in received} == {process.pid}
            assert (tmp_path / "import-status.json").exists()  # the runtime dir is used
            process.terminate()
            assert process.wait(timeout=60) == 0, log.read_text()[-4000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        received.extend(_datagrams(notify))
    assert any("STOPPING=1" in message.split("\n") for message, _ in received)
    assert not re.search(r"Operation not permitted|PermissionError", log.read_text())
