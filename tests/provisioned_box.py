"""A box laid out as scripts/install.sh lays it out, provisioned by root, and what its service
user may then do there.

The box's root is a fresh folder outside pytest's own (those are private to root, and the
service user must reach the box as it reaches ``/``). What the service user may read and
write is asked of the kernel: a separate process with the service's uid and gid and no
other group (as the units run it) tries each file. It runs the system's Python on the
standard library only, as the service user may not enter the test's own interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import tomllib
from cryptography.hazmat.primitives import serialization

from central.bundle import make_bundle
from clinibox_common.contracts.enrolment import write_bundle
from clinibox_common.contracts.envelope import generate_x25519_pair
from clinibox_common.contracts.signing import generate_key_pair
from tests.tls_certs import CertificateAuthority

SYSTEM_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
CLINIC, DEVICE = "clinic-a", "box-1"

_ACCESS = r"""
import json, os, sys

asked = json.loads(sys.argv[1])


def attempt(action):
    try:
        action()
    except PermissionError:
        return "denied"
    except OSError as exc:
        return type(exc).__name__
    return "allowed"


def create_in(folder):
    path = os.path.join(folder, ".probe-%d" % os.getpid())
    open(path, "xb").close()
    os.unlink(path)


answer = {}
for path in asked["read"]:
    answer["read " + path] = attempt(lambda: open(path, "rb").read())
for path in asked["write"]:
    answer["write " + path] = attempt(lambda: open(path, "ab").close())
for path in asked["create_in"]:
    answer["create in " + path] = attempt(lambda: create_in(path))
print(json.dumps(answer))
"""


@contextmanager
def box_root() -> Iterator[Path]:
    """A new folder to be a box's ``/`` (mode 0755, as ``/``), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="clinibox-box-"))
    try:
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def hospital_bundle(folder: Path) -> Path:
    """An enrolment bundle for clinic-a/box-1 from a fresh CA (as ``clinibox central bundle``
    writes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    authority = CertificateAuthority.create(folder / "ca")
    ca_key = folder / "ca.key"
    ca_key.write_bytes(authority.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    generate_x25519_pair(folder / "hospital.pem", folder / "hospital.pub")
    generate_key_pair(folder / "model-signing.pem", folder / "model-signing.pub")
    bundle = folder / "box-1.bundle"
    write_bundle(make_bundle(
        ca_cert_path=authority.cert_path, ca_key_path=ca_key, clinic=CLINIC, device=DEVICE,
        broker_host="mqtt.hospital.example", broker_port=8883,
        hospital_key_path=folder / "hospital.pub",
        signing_key_paths=[folder / "model-signing.pub"]), bundle)
    return bundle


def service_ids(root: Path, user: str = "clinibox") -> tuple[int, int]:
    """The uid and gid of ``user`` in the box's own ``etc/passwd``."""
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise LookupError(f"no user {user} in {root}/etc/passwd")


def named_files(config: Path) -> list[Path]:
    """The files a provisioned config names: the broker's CA, the client certificate and key,
    the hospital's key and the trusted model signing keys."""
    values = tomllib.loads(config.read_text())
    mqtt = values["mqtt"]
    return [Path(p) for p in (mqtt["ca_file"], mqtt["cert_file"], mqtt["key_file"],
                              values["telemetry"]["hospital_key"],
                              *values["models"]["trusted_keys"])]


def service_access(ids: tuple[int, int], *, read: list[Path], write: list[Path],
                   create_in: list[Path]) -> dict[str, str]:
    """``{"read PATH" | "write PATH" | "create in FOLDER": "allowed" | "denied" | error}`` for
    a process of the service user (``ids``, no supplementary group)."""
    asked = {"read": [str(p) for p in read], "write": [str(p) for p in write],
             "create_in": [str(p) for p in create_in]}
    done = subprocess.run([SYSTEM_PYTHON, "-I", "-c", _ACCESS, json.dumps(asked)],
                          user=ids[0], group=ids[1], extra_groups=[], cwd="/",
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def as_service_user(ids: tuple[int, int], work: Callable[[], str]) -> str:
    """What ``work()`` returns, or ``ErrorName: message`` of what it raised, when a child of
    this process runs it with the service user's uid and gid (``ids``) and no other group."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])
            said = work()
        except BaseException as exc:
            said = f"{type(exc).__name__}: {exc}"
        try:
            os.write(write_end, said.encode("utf-8"))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        said = answer.read().decode("utf-8")
    os.waitpid(pid, 0)
    return said


def _owner_mode(path: Path) -> tuple[int, int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def assert_provisioned_for_the_service(config: Path, ids: tuple[int, int]) -> None:
    """Root provisioned the box of ``config`` as its service user (``ids``) needs it: the
    config and the hospital's files root's, its group's to read; the keys in the state folder
    the service's own; the service reads all it needs and cannot change what it trusts."""
    uid, gid = ids
    named = named_files(config)
    folder = named[0].parent
    assert folder.parent == config.with_suffix(".enrolment"), named
    assert {p.parent for p in named} == {folder}, named
    state = Path(tomllib.loads(config.read_text())["storage"]["state_dir"])
    keys = state / "keys"
    device, secret = keys / "device.pem", keys / "study-ref.secret"
    root_owned = {config.parent: 0o750, config: 0o640, folder.parent: 0o750, folder: 0o750,
              **{p: 0o640 for p in [*named, folder / "enrolment.json"]}}
    wanted = {**{str(p): (0, gid, mode) for p, mode in root_owned.items()},
              str(keys): (uid, gid, 0o700), str(device): (uid, gid, 0o600),
              str(secret): (uid, gid, 0o600)}
    found = {path: _owner_mode(Path(path)) for path in wanted}
    assert found == wanted, {p: (found[p], w) for p, w in wanted.items() if found[p] != w}
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*(p.name for p in named), "enrolment.json"])
    not_the_service = [p for p in state.rglob("*") if p.lstat().st_uid != uid]
    assert not_the_service == [], not_the_service

    trusted = [config, *named, folder / "enrolment.json"]
    access = service_access(ids, read=[*trusted, device, secret], write=trusted,
                            create_in=[config.parent, folder.parent, folder, keys])
    expected = {
        **{f"read {p}": "allowed" for p in [*trusted, device, secret]},
        **{f"write {p}": "denied" for p in trusted},
        **{f"create in {p}": "denied" for p in (config.parent, folder.parent, folder)},
        f"create in {keys}": "allowed",  # its own state
    }
    assert access == expected, {k: v for k, v in access.items() if expected.get(k) != v}
