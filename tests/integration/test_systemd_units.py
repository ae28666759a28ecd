"""The units, the drop-ins and the udev rule, checked with systemd's and udev's own tools.

* ``systemd-analyze verify --root=`` on every unit of the installed staging root (see
  test_install_system.py), which also holds the OS's own units as an image would, so
  missing executables, unknown keys and bad values are reported; a broken copy shows
  that they are.
* ``systemd-analyze security --offline=true --threshold=20`` (20 is an exposure of
  2.0) on every service, with each drop-in too; a weakened copy fails it.
* The udev rule goes through ``udevadm test`` (the real rules engine, after Debian's
  own rules) on a real loop device in a private mount namespace, so /dev and /run
  of this machine are left alone.
* The units' system call filters and MemoryDenyWriteExecute=, applied with libseccomp
  (systemd is not PID 1 here; see UnitSandbox), to the runtimes and the viewer.
"""

from __future__ import annotations

import errno
import http.client
import json
import re
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydicom.data import get_testdata_file

from clinibox.table import build_parser
from clinibox_common.contracts.downlink import KIND_CLOCK, clock_payload, seal_downlink
from firmware_app.settings.box import Config
from firmware_app.settings.storage import StorageConfig
from firmware_app.telemetry.hospital_time import hand_over
from firmware_app.telemetry.identity import load_identity
from tests.integration.conftest import REPO, echoscu, storescu, to_toml, wait_for
from tests.integration.test_install_system import (
    UnitSandbox,
    host_units_into,
    installed_root,
    read_unit,
    unit_values,
)
from tests.ports import free_port
from tests.telemetry_payloads import public_pem

pytestmark = pytest.mark.integration

SYSTEMD = REPO / "systemd"
RULE = SYSTEMD / "udev" / "90-clinibox-usb-import.rules"
UNIT_DIR = Path("usr/local/lib/systemd/system")
#: every service, by the name systemd-analyze loads (templates as an instance)
SERVICES = {
    "clinibox.service": "clinibox.service",
    "clinibox-web.service": "clinibox-web.service",
    "clinibox-retention.service": "clinibox-retention.service",
    "clinibox-failure@.service": "clinibox-failure@clinibox.service.service",
    "clinibox-usb-import@.service": "clinibox-usb-import@sdb1.service",
    "clinibox-clock.service": "clinibox-clock.service",
    "clinibox-learning.service": "clinibox-learning.service",
}
DROPINS = ("openvino", "jetson-gpu", "intel-npu", "live-video")
THRESHOLD = 20  # systemd-analyze's scale: 20 is an overall exposure of 2.0, the top of "OK"
CT = Path(get_testdata_file("CT_small.dcm"))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The staging root scripts/install.sh installed the bundle into."""
    return installed_root(tmp_path_factory)


def analyze(*args: str) -> subprocess.CompletedProcess:
    """Run systemd-analyze."""
    return subprocess.run(["systemd-analyze", "--no-pager", *args], capture_output=True,
                          text=True, timeout=120)


def exposure(output: str) -> float:
    """The overall exposure systemd-analyze security printed."""
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert found, output
    return float(found.group(1))


def mini_root(base: Path, wrapper: Path, dropin: str | None = None) -> Path:
    """A root with the OS's units, ours (+ one drop-in) and the installed command."""
    host_units_into(base)
    units = base / UNIT_DIR
    units.mkdir(parents=True)
    for unit in (*SERVICES, "clinibox-retention.timer"):
        shutil.copy(SYSTEMD / unit, units / unit)
    if dropin:
        (units / "clinibox.service.d").mkdir()
        shutil.copy(SYSTEMD / "dropins" / f"{dropin}.conf",
                    units / "clinibox.service.d" / f"50-{dropin}.conf")
    (base / "usr/local/bin").mkdir(parents=True)
    shutil.copy(wrapper, base / "usr/local/bin/clinibox")
    return base


# -- systemd-analyze verify ----------------------------------------------------------------------
def test_every_unit_passes_verify_in_the_installed_root(root):
    names = [*SERVICES.values(), "clinibox-retention.timer"]
    result = analyze("verify", f"--root={root}", *names)
    assert result.returncode == 0 and (result.stdout + result.stderr).strip() == "", \
        result.stdout + result.stderr
    for unit in SERVICES:
        for hook in unit_values(read_unit(root / UNIT_DIR / unit), "Unit", "OnFailure"):
            assert hook == "clinibox-failure@%n.service"
            assert (root / UNIT_DIR / "clinibox-failure@.service").exists()


def test_verify_reports_what_is_wrong_with_a_broken_unit(tmp_path):
    base = tmp_path / "root"
    host_units_into(base)
    (base / UNIT_DIR).mkdir(parents=True)
    text = (SYSTEMD / "clinibox.service").read_text()
    text = text.replace("Restart=on-failure", "Restart=sometimes\nWatchdogSecs=60")
    (base / UNIT_DIR / "clinibox.service").write_text(text)  # and no /usr/local/bin/clinibox
    output = analyze("verify", f"--root={base}", "clinibox.service")
    report = output.stdout + output.stderr
    assert "Unknown key 'WatchdogSecs'" in report
    assert "Failed to parse service restart specifier" in report
    assert "/usr/local/bin/clinibox is not executable" in report


@pytest.mark.parametrize("dropin", DROPINS)
def test_drop_ins_verify_and_stay_within_the_threshold(dropin, root, tmp_path):
    base = mini_root(tmp_path / "root", root / "usr/local/bin/clinibox", dropin)
    verify = analyze("verify", f"--root={base}", "clinibox.service")
    assert verify.returncode == 0 and (verify.stdout + verify.stderr).strip() == "", \
        verify.stdout + verify.stderr
    security = analyze("security", "--offline=true", f"--threshold={THRESHOLD}",
                       f"--root={base}", "clinibox.service")
    assert security.returncode == 0, security.stdout + security.stderr
    assert exposure(security.stdout) <= 2.0
    conf = (SYSTEMD / "dropins" / f"{dropin}.conf").read_text()
    # each one says why in its comments; the runtimes' drop-ins give their JIT W+X memory,
    # the capture cards' keeps MemoryDenyWriteExecute on
    assert ("MemoryDenyWriteExecute=no" in conf) == (dropin != "live-video")
    assert len([line for line in conf.splitlines() if line.startswith("#")]) >= 4


# -- systemd-analyze security --------------------------------------------------------------------
@pytest.mark.parametrize("unit", list(SERVICES))
def test_every_service_scores_at_most_2_0(unit, root):
    result = analyze("security", "--offline=true", f"--threshold={THRESHOLD}",
                     f"--root={root}", SERVICES[unit])
    assert result.returncode == 0, result.stdout + result.stderr
    assert exposure(result.stdout) <= 2.0


def test_threshold_fails_a_weakened_copy(tmp_path):
    text = (SYSTEMD / "clinibox.service").read_text()
    weakened = text.split("# -- sandbox")[0] + "\n[Install]\nWantedBy=multi-user.target\n"
    path = tmp_path / "clinibox.service"
    path.write_text(weakened)
    result = analyze("security", "--offline=true", f"--threshold={THRESHOLD}", str(path))
    assert result.returncode != 0
    assert exposure(result.stdout) > 2.0


def test_the_timer_starts_the_hardened_retention_service():
    timer = read_unit(SYSTEMD / "clinibox-retention.timer")
    assert unit_values(timer, "Timer", "Persistent") == ["true"]
    assert unit_values(timer, "Install", "WantedBy") == ["timers.target"]
    assert unit_values(timer, "Timer", "Unit") == []  # so it starts clinibox-retention.service
    (calendar,) = unit_values(timer, "Timer", "OnCalendar")
    assert analyze("calendar", calendar).returncode == 0
    # a timer runs no process: its service is what systemd-analyze security scores
    assert not any(key.startswith("Exec") for section in timer.values() for key, _ in section)
    service = read_unit(SYSTEMD / "clinibox-retention.service")
    assert unit_values(service, "Service", "Type") == ["oneshot"]


# -- what the units say ----------------------------------------------------------------------------
def test_appliance_unit_contract():
    unit = read_unit(SYSTEMD / "clinibox.service")

    def one(section: str, key: str) -> str:
        (value,) = unit_values(unit, section, key)
        return value

    assert one("Service", "Type") == "notify" and one("Service", "NotifyAccess") == "main"
    assert one("Service", "WatchdogSec") == "60s" and one("Service", "Restart") == "on-failure"
    assert one("Unit", "StartLimitIntervalSec") and int(one("Unit", "StartLimitBurst")) >= 1
    assert one("Unit", "OnFailure") == "clinibox-failure@%n.service"
    assert one("Service", "ExecStart") == "/usr/local/bin/clinibox serve --no-web"
    assert one("Service", "StateDirectory") == "clinibox"


@pytest.mark.parametrize("unit", list(SERVICES))
def test_every_service_runs_the_installed_command_as_the_service_user(unit):
    service = read_unit(SYSTEMD / unit)
    assert unit_values(service, "Service", "User") == ["clinibox"]
    assert "CLINIBOX_CONFIG=/etc/clinibox/clinibox.toml" in \
        unit_values(service, "Service", "Environment")
    parser = build_parser()
    commands = [value for key, value in service["Service"] if key.startswith("Exec")]
    assert commands
    for command in commands:
        words = command.lstrip("+-").split()
        assert words[0] == "/usr/local/bin/clinibox"
        # the arguments must be ones `clinibox` accepts (%i/%I stand for an instance)
        arguments = [word.replace("%i", "sdb1").replace("%I", "sdb1") for word in words[1:]]
        try:
            assert parser.parse_args(arguments).func
        except SystemExit:
            pytest.fail(f"{unit}: `clinibox {' '.join(arguments)}` is refused by the command "
                        "line (is its subcommand in the table of clinibox/table.py?)")


def test_only_the_mount_provision_and_unmount_steps_run_privileged():
    privileged = {}
    for unit in SERVICES:
        for key, value in read_unit(SYSTEMD / unit)["Service"]:
            if key.startswith("Exec") and value.lstrip("-@:|")[:1] in "+!":
                privileged.setdefault((unit, key), []).append(value)
    assert privileged == {
        ("clinibox-usb-import@.service", "ExecStartPre"): [
            "+/usr/local/bin/clinibox usb-import --step mount %I",
            "-+/usr/local/bin/clinibox usb-import --step provision %I"],
        ("clinibox-usb-import@.service", "ExecStopPost"):
            ["+/usr/local/bin/clinibox usb-import --step unmount %I"],
    }
    usb = read_unit(SYSTEMD / "clinibox-usb-import@.service")
    (wait,) = unit_values(usb, "Service", "ExecStart")
    assert "--step wait" in wait
    assert unit_values(usb, "Unit", "BindsTo") == ["dev-%i.device"]


# -- the udev rule -------------------------------------------------------------------------------
RULE_KEYS = {"ACTION", "SUBSYSTEM", "SUBSYSTEMS", "KERNEL", "ENV", "ATTRS", "TAG", "GOTO",
             "LABEL"}


def test_udev_rule_keys_and_labels():
    labels, gotos, wants = set(), set(), []
    for line in RULE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        for key, attribute, operator, value in re.findall(
                r'\s*([A-Z]+)(?:\{([A-Za-z_]+)\})?\s*(==|!=|\+=|=)\s*"([^"]*)"\s*(?:,|$)', line):
            assert key in RULE_KEYS, line
            if key == "LABEL":
                labels.add(value)
            elif key == "GOTO":
                gotos.add(value)
            elif (key, attribute) == ("ENV", "SYSTEMD_WANTS"):
                assert operator == "+="
                wants.append(value)
            elif key in ("ACTION", "SUBSYSTEM", "SUBSYSTEMS", "KERNEL", "ATTRS"):
                assert operator in ("==", "!="), line
    assert gotos <= labels and labels
    assert wants == ["clinibox-usb-import@%k.service"]
    assert (SYSTEMD / "clinibox-usb-import@.service").exists()
    assert 'ACTION!="add"' in RULE.read_text()


@pytest.fixture
def loop_medium(tmp_path) -> Iterator[str]:
    """A loop device with an ext4 filesystem on it; its kernel name."""
    image = tmp_path / "medium.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image), "8M"], check=True)
    attached = subprocess.run(["losetup", "--find", "--show", str(image)],
                              capture_output=True, text=True)
    if attached.returncode != 0:
        pytest.fail(f"cannot attach a loop device here: {attached.stderr.strip()}")
    device = attached.stdout.strip()
    yield Path(device).name
    subprocess.run(["losetup", "--detach", device], check=False)


def udevadm_test(rule_text: str, device: str, work: Path) -> str:
    """``udevadm test --action=add`` with this rule among the system's rules, isolated."""
    rule = work / "rule"
    rule.write_text(rule_text)
    script = f"""set -e
mkdir -p {work}/hostdev
mount --bind /dev {work}/hostdev
mount -t tmpfs none /dev
for node in null {device}; do touch /dev/$node; mount --bind {work}/hostdev/$node /dev/$node; done
mount -t tmpfs none /run
mkdir -p /run/udev/rules.d
cp {rule} /run/udev/rules.d/90-clinibox-usb-import.rules
udevadm test --action=add /sys/class/block/{device}
"""
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                             "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_udev_rule_through_the_real_rules_engine(loop_medium, tmp_path):
    text = RULE.read_text()
    real = udevadm_test(text, loop_medium, tmp_path)
    assert "Reading rules file: /run/udev/rules.d/90-clinibox-usb-import.rules" in real
    assert "ID_FS_USAGE=filesystem" in real and "ID_FS_TYPE=ext4" in real
    assert not re.search(r"90-clinibox-usb-import\.rules:\d+ (Invalid|Unknown|.*error)", real)
    assert "SYSTEMD_WANTS" not in real  # a loop device is neither on USB nor removable

    # the same rule with the bus test pointed at this device: the rest of it matches
    as_if_usb = text.replace('SUBSYSTEMS=="usb"', f'KERNEL=="{loop_medium}"')
    assert as_if_usb != text
    matched = udevadm_test(as_if_usb, loop_medium, tmp_path)
    assert f"SYSTEMD_WANTS=clinibox-usb-import@{loop_medium}.service" in matched

    broken = udevadm_test(text.replace("ENV{ID_FS_USAGE}", "ENVY{ID_FS_USAGE}"), loop_medium,
                          tmp_path)
    assert re.search(r"90-clinibox-usb-import\.rules:\d+ Invalid key 'ENVY'", broken)


# -- the sandbox, applied ------------------------------------------------------------------------
def _infer(tmp_path: Path, backend: str, sandbox: UnitSandbox) -> subprocess.CompletedProcess:
    config = tmp_path / f"{backend}.toml"
    config.write_text(to_toml({"runtime": {"backend": backend},
                               "storage": {"state_dir": str(tmp_path / "state")}}))
    return subprocess.run([sys.executable, "-m", "clinibox", "infer", "--config",
                           str(config), "--json", str(CT)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, preexec_fn=sandbox.apply)


def test_the_emulated_sandbox_denies_what_the_unit_denies():
    sandbox = UnitSandbox(SYSTEMD / "clinibox.service")
    probe = ("import mmap, os\n"
             "for attempt in (lambda: os.setuid(0), lambda: os.nice(1),\n"
             "                lambda: mmap.mmap(-1, 4096, prot=7)):\n"
             "    try:\n        attempt()\n        print('allowed')\n"
             "    except OSError as exc:\n        print(exc.errno)\n"
             "os.sched_setaffinity(0, os.sched_getaffinity(0))\nprint('affinity')\n"
             "from firmware_app.service.priority import lower_this_thread\n"
             "print(lower_this_thread(), os.sched_getscheduler(0) == os.SCHED_IDLE)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            preexec_fn=sandbox.apply, timeout=60, cwd=REPO)
    # setuid and W+X memory denied; the analysis may lower its own weight (os.nice(1):
    # setpriority, allowed back with sched_setscheduler for firmware_app/service/priority.py)
    assert result.stdout.split() == ["1", "allowed", "1", "affinity", "True", "True"], \
        result.stderr


def test_onnxruntime_runs_under_the_appliance_sandbox(tmp_path):
    result = _infer(tmp_path, "onnxruntime", UnitSandbox(SYSTEMD / "clinibox.service"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["status"] == "processed"
    assert "Operation not permitted" not in result.stderr


@pytest.mark.parametrize("unit", ["clinibox.service", "clinibox-web.service"])
def test_the_decoder_sandbox_limits_itself_under_the_units_sandbox(unit):
    """The decoder child lowers its own RLIMIT_AS under the unit's seccomp filter (glibc's
    setrlimit is the prlimit64 system call, which ``~@resources`` leaves allowed)."""
    probe = ("from pathlib import Path\n"
             "from engine.settings import LimitsConfig\n"
             "from engine.imaging.sandbox import DecodeSandbox\n"
             "box = DecodeSandbox(LimitsConfig())\n"
             f"image = box.decode(Path({str(CT)!r}), 1)\n"
             "print(image.modality, box.memory_limited)\n"
             "box.close()\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=REPO, timeout=120, preexec_fn=UnitSandbox(SYSTEMD / unit).apply)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CT", "True"]


def test_the_pdf_report_is_made_under_the_viewers_sandbox():
    """The viewer makes its PDF reports in a child process (``web.report_content``): that
    child, fpdf and a CJK font included, runs under clinibox-web.service's seccomp filter
    and memory protections."""
    probe = ("from web.report_content import ReportContent, make_pdf\n"
             "content = ReportContent(patient_name='王小明', patient_id='P1', study_date='',\n"
             "    study_description='CT', modality='CT', received='', verdict='发现可疑区域',\n"
             "    findings=['one'], warnings=[], model_id='m@1', notice='n',\n"
             "    generated='')\n"
             "pdf = make_pdf(content, 'zh_CN')\n"
             "print(pdf[:5].decode(), len(pdf) > 10000)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=REPO, timeout=120,
                            preexec_fn=UnitSandbox(SYSTEMD / "clinibox-web.service").apply)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["%PDF-", "True"]


def test_openvino_needs_write_execute_memory(tmp_path):
    unit = SYSTEMD / "clinibox.service"
    refused = _infer(tmp_path, "openvino", UnitSandbox(unit))
    assert refused.returncode != 0
    allowed = _infer(tmp_path, "openvino",
                     UnitSandbox(unit, (SYSTEMD / "dropins" / "openvino.conf",)))
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)[0]["backend"].startswith("openvino")


def test_viewer_serves_https_under_its_sandbox(tmp_path):
    port = free_port()
    config = tmp_path / "web.toml"
    config.write_text(to_toml({"storage": {"state_dir": str(tmp_path / "state")},
                               "web": {"host": "127.0.0.1", "port": port, "threads": 1}}))
    log = tmp_path / "web.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "clinibox", "web", "--config", str(config)],
            cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
            preexec_fn=UnitSandbox(SYSTEMD / "clinibox-web.service").apply)
    status: list[int] = []

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"clinibox web exited {process.returncode}:\n{log.read_text()[-3000:]}")
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=5, context=ssl._create_unverified_context())
        try:
            connection.request("GET", "/login")
            status.append(connection.getresponse().status)
        except OSError:
            return False
        finally:
            connection.close()
        return True

    try:
        wait_for(answers, 90, "the viewer to answer over HTTPS")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert status[-1] == 200
    assert "Operation not permitted" not in log.read_text()


@pytest.mark.parametrize("unit", ["clinibox-failure@.service", "clinibox-retention.service"])
def test_oneshot_commands_run_under_their_sandbox(unit, tmp_path):
    config = tmp_path / "box.toml"
    config.write_text(to_toml({"storage": {"state_dir": str(tmp_path / "state")}}))
    (command,) = unit_values(read_unit(SYSTEMD / unit), "Service", "ExecStart")
    arguments = [word.replace("%i", "clinibox.service") for word in command.split()[1:]]
    result = subprocess.run(
        [sys.executable, "-m", "clinibox", *arguments, "--config", str(config)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        preexec_fn=UnitSandbox(SYSTEMD / unit).apply)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "state" / "clinibox.db").exists()
    assert "Operation not permitted" not in result.stderr


#: asks the kernel to set the monotonic clock, which it never allows (EINVAL): a call the
#: unit's filter lets through fails with EINVAL, a call it denies with EPERM. The system
#: clock of the test machine is never touched.
SET_CLOCK_PROBE = ("import time\ntry:\n    time.clock_settime(time.CLOCK_MONOTONIC, 0)\n"
                   "except OSError as exc:\n    print(exc.errno)\n")


@pytest.mark.parametrize(("unit", "answer"), [
    ("clinibox-clock.service", errno.EINVAL), ("clinibox.service", errno.EPERM),
    ("clinibox-web.service", errno.EPERM)])
def test_only_the_clock_helpers_filter_lets_the_clock_be_set(unit, answer):
    result = subprocess.run([sys.executable, "-c", SET_CLOCK_PROBE], capture_output=True,
                            text=True, timeout=60, preexec_fn=UnitSandbox(SYSTEMD / unit).apply)
    assert result.stdout.strip() == str(answer), result.stderr


def test_the_clock_helper_runs_under_its_sandbox_with_its_one_capability(tmp_path):
    """``clinibox hospital-time`` under clinibox-clock.service's filter checks a waiting
    time (the hospital's, for this box, not ahead: the test machine's clock stays as it is)
    and removes it; its unit holds CAP_SYS_TIME and nothing else, and no user namespace."""
    unit = read_unit(SYSTEMD / "clinibox-clock.service")
    assert unit_values(unit, "Service", "CapabilityBoundingSet") == ["CAP_SYS_TIME"]
    assert unit_values(unit, "Service", "AmbientCapabilities") == ["CAP_SYS_TIME"]
    assert unit_values(unit, "Service", "PrivateUsers") == []
    assert unit_values(unit, "Service", "ProtectClock") == []
    assert read_unit(SYSTEMD / "clinibox.service")["Service"].count(("ProtectClock", "yes")) == 1
    path_unit = read_unit(SYSTEMD / "clinibox-clock.path")
    assert unit_values(path_unit, "Path", "PathExistsGlob") == [
        "/var/lib/clinibox/clock-incoming/*.downlink"]
    state = tmp_path / "state"
    box = Config(storage=StorageConfig(state_dir=str(state)))
    box.telemetry.clinic, box.telemetry.device = "clinic-a", "box-1"
    identity = load_identity(box)
    assert box.clock_incoming_dir == state / "clock-incoming"
    hospital = Ed25519PrivateKey.generate()
    (tmp_path / "signing.pub").write_text(public_pem(hospital))
    built = time.time() - 60
    hand_over(box.clock_incoming_dir, seal_downlink(
        "clinic-a", "box-1", 1, clock_payload(0, built), identity.downlink_key.public_key(),
        hospital, kind=KIND_CLOCK), built)
    config = tmp_path / "box.toml"
    config.write_text(to_toml({"storage": {"state_dir": str(state)},
                               "telemetry": {"clinic": "clinic-a", "device": "box-1",
                                             "hospital_signing_key": str(tmp_path /
                                                                         "signing.pub")}}))
    (command,) = unit_values(unit, "Service", "ExecStart")
    result = subprocess.run(
        [sys.executable, "-m", "clinibox", *command.split()[1:], "--config", str(config)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        preexec_fn=UnitSandbox(SYSTEMD / "clinibox-clock.service").apply)
    assert result.returncode == 0, result.stderr
    assert "not behind the hospital's time" in result.stdout
    assert list(box.clock_incoming_dir.iterdir()) == []
    assert "Operation not permitted" not in result.stderr


def test_the_native_dicom_receiver_runs_under_the_appliance_sandbox(tmp_path):
    """`clinibox serve` under clinibox.service's seccomp filter starts clinibox-receiver
    (fork, exec, prctl, umask, a Unix socket) and stores what a modality sends."""
    port = free_port()
    config = tmp_path / "box.toml"
    config.write_text(to_toml({"storage": {"state_dir": str(tmp_path / "state")},
                               "dicom": {"port": port, "host": "127.0.0.1",
                                         "receiver": "native"},
                               "usb": {"enabled": False}, "web": {"enabled": False}}))
    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        service = subprocess.Popen(
            [sys.executable, "-m", "clinibox", "serve", "--config", str(config)],
            stdout=output, stderr=subprocess.STDOUT, cwd=REPO,
            preexec_fn=UnitSandbox(SYSTEMD / "clinibox.service").apply)
    try:
        wait_for(lambda: service.poll() is None and echoscu(port), 120, "C-ECHO")
        assert storescu(port, [CT]).returncode == 0
        wait_for(lambda: "1 processed" in status_line(config), 120, "the slice processed")
    finally:
        service.terminate()
        service.wait(timeout=60)
    text = log.read_text()
    assert "(native receiver)" in text and "Operation not permitted" not in text


def status_line(config: Path) -> str:
    """`clinibox status` of the box at ``config``, as text."""
    result = subprocess.run([sys.executable, "-m", "clinibox", "status", "--config",
                             str(config), "--json"], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    counts = json.loads(result.stdout) if result.returncode == 0 else {}
    return f"{counts.get('processed', 0)} processed"
