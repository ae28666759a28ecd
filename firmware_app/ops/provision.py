"""``clinibox provision BUNDLE``: make a box the hospital's, offline, from its enrolment bundle.

On an installed box it runs as root (``sudo clinibox provision BUNDLE --config
/etc/clinibox/clinibox.toml``): the config, and the hospital's files it names (the CA,
the broker, the model signing keys the box trusts), are root's to write and the
service user's only to read, so a service taken over cannot trust a key of its own
or talk to another broker. What it does, in this order (nothing is written before
every check passed):

1. Reads and checks the bundle (``clinibox_common.contracts.enrolment``): CA, client
   certificate and key, CN ``clinic/device``, validity, key types, ids.
2. Reads the existing config (``--config``, else ``$CLINIBOX_CONFIG``; there
   must be a path, as provisioning writes it) and builds the new one: every
   existing value is kept; ``[telemetry] clinic, device, hospital_key,
   hospital_signing_key`` (empty when the bundle has none),
   ``[mqtt] host, port, ca_file, cert_file, key_file`` and ``[models]
   trusted_keys`` are set, and ``[models] name`` when the bundle names the box's
   model; a relative ``[storage] state_dir`` is pinned to the absolute folder it
   means now, because the identity is made there and the service must find the
   same one whatever its working folder. The result is validated like any config
   before anything is written, and the config's folder must be writable (else:
   run it as root).
3. Writes the hospital's files next to the config, into
   ``<config name>.enrolment/<fingerprint>/`` (``/etc/clinibox/clinibox.enrolment/…``
   on a box): ``ca.pem``, ``client-cert.pem``, ``client-key.pem``, ``hospital.pub``,
   ``hospital-signing.pub`` (the downlink's signer, when the bundle has it),
   ``model-signing-<key id>.pub`` and ``enrolment.json`` (the bundle without the
   key), folders 0750 and files 0640, with the config folder's group when root
   writes them (``clinibox``: the service reads them, the world does not). A new
   folder per bundle means the switch to a new enrolment is the atomic replacement
   of the config: a power cut leaves the old config with its old folder, or the
   new with the new.
4. Creates the device identity (``load_identity``) if the box has none, under
   ``<state_dir>/keys``. Root does not write in the state folder another user
   owns (a link planted there could turn the write to any file): a child process
   does it as that folder's owner and group, so the keys belong to the service.
5. Replaces the config atomically, keeping its owner, group and mode (the
   previous file is kept as ``.bak``), and removes enrolment folders the config
   no longer names.
6. Prints what the hospital must enrol: clinic, device, the public key and
   its id, and the ``clinibox central enrol-code CODE`` line, also as a QR
   code in the terminal (and as a PNG with ``--qr-png``).

A failure after step 3 removes the new enrolment folder again and names what
stays written (a device key made in step 4 is kept: the next run uses it); the
config is then the old one.

The device identity is never replaced by provisioning: a renewed bundle
(same clinic and device, e.g. a new certificate) is applied as is and the
hospital's enrolment stays valid. A bundle for another clinic or device on
an already provisioned box needs ``--force`` (a wrong USB stick must not
silently move a box); the key is kept, so the hospital only enrols the new
ids with the printed code. ``--new-identity`` makes a new signing key and a new
downlink key (for a box whose key may have leaked, or that moves to another
hospital): the old key files are renamed ``device.pem.retired-<time>`` and
``device-downlink.key.retired-<time>``, not deleted, and the
study-reference secret is kept so ``clinibox study REF`` still finds the
studies behind earlier alerts.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import segno
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clinibox_common.contracts.enrolment import (
    EnrolmentBundle,
    EnrolmentCode,
    EnrolmentError,
    read_bundle,
)
from clinibox_common.errors import EXIT_OK, EXIT_USAGE, CliniboxError
from clinibox_common.fs import fsync_dir, write_atomically
from clinibox_common.i18n import ENGLISH, N_, current, gettext
from clinibox_common.i18n.error_words import error_words
from clinibox_common.i18n.formats import names
from clinibox_common.i18n.text import ljust
from clinibox_common.settings_loader import ConfigError, read_toml, toml_value
from firmware_app.settings import box as config_module
from firmware_app.settings.box import Config
from firmware_app.settings.telemetry import TelemetryConfig
from firmware_app.telemetry.identity import DeviceIdentity, load_identity

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: the folder of the hospital's files beside the config: ``<config name>.enrolment``
ENROLMENT_SUFFIX = ".enrolment"
#: what provisioning writes beside the config: its group reads, only its owner writes
FOLDER_MODE, FILE_MODE = 0o750, 0o640


class ProvisionError(CliniboxError):
    """Provisioning refused or failed; ``written`` names what it had written and left (none:
    nothing was changed)."""

    kind = N_("provisioning refused")

    def __init__(self, *args: object, exit_status: int | None = None,
                 written: Sequence[str] = ()) -> None:
        super().__init__(*args, exit_status=exit_status)
        self.written = tuple(written)


class KeyRefused(CliniboxError, ValueError):
    """A device key of the wrong kind: its words already in the reader's language."""

    def said(self) -> str:
        """The words for a person (``error_words`` reads them)."""
        return str(self)


@dataclass(frozen=True)
class Provisioned:
    """What ``provision`` did: the new config and what the hospital must enrol."""

    config_path: Path
    config: Config
    bundle: EnrolmentBundle
    folder: Path
    identity: DeviceIdentity
    identity_created: bool
    state_dir_pinned: bool

    @property
    def code(self) -> EnrolmentCode:
        """The enrolment code of this box."""
        return EnrolmentCode(self.identity.clinic, self.identity.device,
                             self.identity.signing_key.public_key())


def config_path(given: str | None) -> Path:
    """``--config``, else ``$CLINIBOX_CONFIG``; ProvisionError (usage) when neither is set."""
    value = given or os.environ.get(config_module.CONFIG_ENV)
    if not value:
        raise ProvisionError(gettext("provision writes the box's config: name it with %(option)s "
                                     "(or set %(variable)s)", option="--config PATH",
                                     variable=config_module.CONFIG_ENV), exit_status=EXIT_USAGE)
    return Path(value).expanduser().absolute()


def _read_existing(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = read_toml(path)
    config_module.from_dict(data)
    return data


def _already(existing: dict[str, Any]) -> tuple[str, str] | None:
    """(clinic, device) when the existing config already names a telemetry identity."""
    telemetry, mqtt = existing.get("telemetry", {}), existing.get("mqtt", {})
    if not ({"clinic", "device"} & set(telemetry) or mqtt.get("host")):
        return None
    defaults = TelemetryConfig()
    return (telemetry.get("clinic", defaults.clinic), telemetry.get("device", defaults.device))


def enrolment_parent(target: Path) -> Path:
    """The folder of the enrolment folders of the config ``target``: beside it, named after it
    (``/etc/clinibox/clinibox.enrolment``), so that two configs in one folder keep theirs."""
    return target.with_suffix(ENROLMENT_SUFFIX)


def _files(bundle: EnrolmentBundle) -> dict[str, str]:
    """File name → text of what the enrolment folder holds."""
    files = {"ca.pem": bundle.ca_cert, "client-cert.pem": bundle.client_cert,
             "client-key.pem": bundle.client_key, "hospital.pub": bundle.hospital_key}
    if bundle.hospital_signing_key:
        files["hospital-signing.pub"] = bundle.hospital_signing_key
    for kid, pem in zip(bundle.signing_key_ids(), bundle.model_signing_keys, strict=True):
        files[f"model-signing-{kid}.pub"] = pem
    record = {k: v for k, v in bundle.to_dict().items() if k != "tls"}
    record.update(fingerprint=bundle.fingerprint,
                  provisioned_at=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    files["enrolment.json"] = json.dumps(record, indent=2) + "\n"
    return files


def merge(existing: dict[str, Any], bundle: EnrolmentBundle, state_dir: Path,
          folder: Path) -> dict[str, Any]:
    """The new config as TOML data: ``existing`` plus what the bundle sets."""
    data = copy.deepcopy(existing)
    kids = bundle.signing_key_ids()
    updates = {
        "storage": {"state_dir": str(state_dir)},
        "telemetry": {"clinic": bundle.clinic, "device": bundle.device,
                      "hospital_key": str(folder / "hospital.pub")},
        "mqtt": {"host": bundle.broker_host, "port": bundle.broker_port,
                 "ca_file": str(folder / "ca.pem"), "cert_file": str(folder / "client-cert.pem"),
                 "key_file": str(folder / "client-key.pem")},
        "models": {"trusted_keys": [str(folder / f"model-signing-{k}.pub") for k in kids],
                   "trust_demo_key": False},
    }
    if bundle.model_name:  # the hospital names the box's model: its rollouts of it reach the box
        updates["models"]["name"] = bundle.model_name
    # the downlink's signer: set from the bundle; an older bundle without one turns it off
    updates["telemetry"]["hospital_signing_key"] = (
        str(folder / "hospital-signing.pub") if bundle.hospital_signing_key else "")
    for section, values in updates.items():
        data.setdefault(section, {}).update(values)
    return data


def render(data: dict[str, Any], fingerprint: str, origin: str = "") -> str:
    """TOML text of ``data`` in the config's section and key order, each key with its doc;
    ``origin``: what last changed it, when not the bundle (``fingerprint``) itself."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# clinibox configuration, written by clinibox provision on {stamp} from",
             f"# {origin or f'enrolment bundle {fingerprint}'}. Keys not listed take their "
             "defaults", "# (clinibox config prints them all).", ""]
    for section in dataclasses.fields(Config):
        values = data.get(section.name)
        if not values:
            continue
        lines.append(f"[{section.name}]")
        for spec in dataclasses.fields(getattr(Config(), section.name)):
            if spec.name in values:
                lines.append(f"# {spec.metadata.get('doc', '')}")
                lines.append(f"{spec.name} = {toml_value(values[spec.name])}")
        lines.append("")
    text = "\n".join(lines)
    if tomllib.loads(text) != data:  # a value toml_value cannot write faithfully
        raise ProvisionError(gettext("the new config does not read back as written; nothing "
                                     "changed"))
    return text


def set_values(target: Path, values: dict[str, dict[str, Any]], origin: str) -> Config:
    """Set ``values`` (section -> key -> value) in the config at ``target`` (root: on an installed
    box it is root's), checked as a whole before it replaces the old one atomically with its
    owner, group and mode (the old one kept as ``.bak``); the new config. ProvisionError when
    the result would not be valid or cannot be written."""
    try:
        data = _read_existing(target)
        for section, keys in values.items():
            data.setdefault(section, {}).update(keys)
        new = config_module.from_dict(data)
    except ConfigError as exc:
        raise ProvisionError(gettext("the new config would not be valid: %(reason)s",
                                     reason=exc)) from exc
    text = render(data, "", origin)
    _check_writable(target)
    mode, owner = _config_owner(target, _group(target.parent))
    try:
        if target.exists():
            shutil.copy2(target, target.with_name(target.name + ".bak"))
        write_atomically(target, text, mode, owner=owner)
    except OSError as exc:
        raise ProvisionError(gettext("cannot write: %(reason)s", reason=error_words(exc))) \
            from exc
    return new


def _same(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except OSError:
        return False


def _group(folder: Path) -> int | None:
    """The group of what provisioning writes beside the config: the config folder's when root
    writes (``clinibox`` on an installed box), else None (the writer's own)."""
    return folder.stat().st_gid if os.geteuid() == 0 else None


def _make_folder(path: Path, gid: int | None) -> None:
    """``path`` as a FOLDER_MODE folder of group ``gid``, when it does not exist yet."""
    if path.is_dir():
        return
    path.mkdir(mode=FOLDER_MODE)
    _own(path, gid)


def _own(path: Path, gid: int | None) -> None:
    """Give a folder provisioning made its mode (whatever the umask) and group."""
    os.chmod(path, FOLDER_MODE)
    if gid is not None:
        os.chown(path, -1, gid)


def _write_folder(parent: Path, name: str, files: dict[str, str],
                  gid: int | None) -> tuple[Path, bool]:
    """Write ``files`` into ``parent/name`` as a whole (a fresh folder renamed into place);
    the folder and whether it is new (False: it was there, whole or damaged)."""
    _make_folder(parent, gid)
    final = parent / name
    if all(_same(final / file_name, text) for file_name, text in files.items()
           if file_name != "enrolment.json"):
        return final, False  # this very bundle is in place already: leave what the config names
    incoming = Path(tempfile.mkdtemp(prefix=f".incoming-{name}-", dir=parent))
    try:
        _own(incoming, gid)
        owner = None if gid is None else (-1, gid)
        for file_name, text in files.items():
            write_atomically(incoming / file_name, text, FILE_MODE, owner=owner)
        fsync_dir(incoming)
        created = not final.exists()
        if created:
            os.replace(incoming, final)
        else:  # damaged or incomplete: swap a whole new copy in
            old = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=parent))
            os.replace(final, old / name)
            os.replace(incoming, final)
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    fsync_dir(parent)
    return final, created


def state_owner(config: Config) -> tuple[int, int] | None:
    """(uid, gid) to write the state as: the state folder's owner when root provisions a box
    whose state another user owns (an installed box: ``clinibox``), else None (as is)."""
    if os.geteuid() != 0:
        return None
    try:
        info = config.state_dir.stat()
    except FileNotFoundError:
        return None
    return (info.st_uid, info.st_gid) if info.st_uid != 0 else None


def _identity_step(config: Config, new_identity: bool) -> dict[str, Any]:
    """Retire the device key when asked, then read the identity or make it; as JSON data:
    ``key`` (PEM) and ``secret`` (hex), or ``error``; ``written``: what it wrote and left."""
    key, secret = config.device_key_path, config.device_secret_path
    downlink = config.downlink_key_path
    before = {path: path.exists() for path in (key, secret, downlink)}
    retired: dict[Path, Path] = {}
    try:
        if new_identity:  # the signing key and the downlink key go together
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            for path in (key, downlink):
                if path.exists():
                    retired[path] = path.with_name(f"{path.name}.retired-{stamp}")
                    os.replace(path, retired[path])
        config.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        identity = load_identity(config)
    except (OSError, ValueError) as exc:
        said = error_words(exc)  # here: the child writing as the state's owner keeps the language
        for path, old in list(retired.items()):  # the old keys back: the config names them
            try:
                if path.exists():
                    path.unlink()
                os.replace(old, path)
                del retired[path]
            except OSError:
                pass
        return {"error": said, "written": _state_written(before, retired)}
    pem = identity.signing_key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
    downlink_pem = identity.downlink_key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption())
    return {"key": pem.decode("ascii"), "secret": identity.secret.hex(),
            "downlink_key": downlink_pem.decode("ascii"),
            "created": not before[key] or key in retired,
            "written": _state_written(before, retired)}


def _state_written(before: dict[Path, bool], retired: dict[Path, Path]) -> list[str]:
    words = [gettext("renamed %(path)s to %(name)s", path=path, name=old.name)
             for path, old in retired.items()]
    return words + [gettext("made %(path)s", path=path) for path, was in before.items()
                    if not was and path.exists()]


def _as_owner(owner: tuple[int, int] | None,
              work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``work()``, here (``owner`` None) or in a child process with ``owner``'s uid and gid and
    no other group; its JSON data comes back through a pipe."""
    if owner is None:
        return work()
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(owner[1])
            os.setuid(owner[0])
            answer = work()
        except BaseException as exc:
            answer = {"error": gettext("as user %(uid)s: %(reason)s", uid=owner[0],
                                       reason=error_words(exc)), "written": []}
        try:
            with os.fdopen(write_end, "wb") as out:
                out.write(json.dumps(answer).encode("utf-8"))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer_pipe:
        data = answer_pipe.read()
    os.waitpid(pid, 0)
    try:
        answer = json.loads(data)
    except ValueError:
        answer = {"error": gettext("the child writing as user %(uid)s gave no answer",
                                   uid=owner[0]), "written": []}
    return answer if isinstance(answer, dict) else {"error": gettext("a bad answer"),
                                                    "written": []}


def _identity(config: Config, answer: dict[str, Any]) -> DeviceIdentity:
    """The DeviceIdentity of the identity step's answer."""
    key = serialization.load_pem_private_key(str(answer["key"]).encode("ascii"), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyRefused(gettext("the device key is not an Ed25519 key"))
    downlink_key = serialization.load_pem_private_key(
        str(answer["downlink_key"]).encode("ascii"), password=None)
    if not isinstance(downlink_key, X25519PrivateKey):
        raise KeyRefused(gettext("the downlink key is not an X25519 key"))
    return DeviceIdentity(config.telemetry.clinic, config.telemetry.device, key,
                          bytes.fromhex(str(answer["secret"])), downlink_key)


def _check_writable(target: Path) -> None:
    """ProvisionError (usage) when the config's folder cannot be written: on an installed box,
    provisioning is root's."""
    folder = target.parent
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ProvisionError(gettext(
            "cannot write %(folder)s: provisioning writes the box's config and the hospital's "
            "files there; on an installed box run it as root: %(command)s", folder=folder,
            command=f"sudo clinibox provision BUNDLE --config {target}"), exit_status=EXIT_USAGE)


def _config_owner(target: Path, gid: int | None) -> tuple[int, tuple[int, int] | None]:
    """Mode and (uid, gid) of the new config: the old one's (its owner and group only when
    root writes), else 0640 with the folder's group."""
    if not target.exists():
        return FILE_MODE, (None if gid is None else (-1, gid))
    info = target.stat()
    owner = (info.st_uid, info.st_gid) if os.geteuid() == 0 else None
    return info.st_mode & 0o777, owner


def provision(bundle_path: Path, target: Path, *, force: bool = False,
              new_identity: bool = False) -> Provisioned:
    """Provision the box configured at ``target`` from the bundle; see the module docstring."""
    try:
        bundle = read_bundle(bundle_path)
    except EnrolmentError as exc:
        raise ProvisionError(gettext("bundle %(path)s refused: %(reason)s", path=bundle_path,
                                     reason=exc)) from exc
    try:
        existing = _read_existing(target)
    except ConfigError as exc:
        raise ProvisionError(gettext("the existing config is not valid, fix it first: "
                                     "%(reason)s", reason=exc), exit_status=EXIT_USAGE) from exc
    before = _already(existing)
    if before and before != (bundle.clinic, bundle.device) and not force:
        raise ProvisionError(gettext(
            "this box is already provisioned as %(before)s, the bundle is for %(bundle)s; "
            "%(option)s provisions it for %(bundle)s (its device key is kept: enrol the new "
            "code)", before=f"{before[0]}/{before[1]}", bundle=f"{bundle.clinic}/{bundle.device}",
            option="--force"))
    old = config_module.from_dict(existing)
    state_dir = old.state_dir
    pinned = existing.get("storage", {}).get("state_dir") != str(state_dir)
    parent = enrolment_parent(target)
    folder = parent / bundle.fingerprint
    data = merge(existing, bundle, state_dir, folder)
    try:
        new = config_module.from_dict(data)
    except ConfigError as exc:
        raise ProvisionError(gettext("the new config would not be valid: %(reason)s",
                                     reason=exc)) from exc
    text = render(data, bundle.fingerprint)
    if new.telemetry.device_key and not new.device_key_path.exists():
        raise ProvisionError(gettext("[telemetry] device_key %(path)s does not exist",
                                     path=new.device_key_path))
    if new_identity and (new.telemetry.device_key or new.telemetry.downlink_key):
        raise ProvisionError(gettext("%(option)s: [telemetry] device_key or downlink_key names "
                                     "the key file; replace that file yourself",
                                     option="--new-identity"), exit_status=EXIT_USAGE)
    _check_writable(target)
    written: list[str] = []
    made_folder, made_parent = False, not parent.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        gid = _group(target.parent)
        _, made_folder = _write_folder(parent, bundle.fingerprint, _files(bundle), gid)
        answer = _as_owner(state_owner(new), lambda: _identity_step(new, new_identity))
        written += answer.get("written", [])
        if "error" in answer:
            raise ProvisionError(gettext("cannot make the device identity under %(path)s: "
                                         "%(reason)s", path=new.keys_dir,
                                         reason=answer["error"]))
        identity, created = _identity(new, answer), bool(answer.get("created"))
        mode, owner = _config_owner(target, gid)
        if target.exists():
            backup = target.with_name(target.name + ".bak")
            shutil.copy2(target, backup)
            written.append(gettext("copied the config to %(path)s", path=backup))
        write_atomically(target, text, mode, owner=owner)
    except (OSError, ValueError, ProvisionError) as exc:
        if made_folder:  # undone: the old config does not name it
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():
                written.append(gettext("wrote %(path)s", path=folder))
            elif made_parent:
                with contextlib.suppress(OSError):
                    parent.rmdir()
        message = str(exc) if isinstance(exc, ProvisionError) else gettext(
            "cannot write: %(reason)s", reason=error_words(exc))
        raise ProvisionError(message, written=written) from exc
    for stale in parent.iterdir():
        if stale.name != folder.name and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return Provisioned(target, new, bundle, folder, identity, created, pinned)


def _row(label: str, value: str, width: int = 16) -> str:
    """One line of the report: a label in a column ``width`` wide (as the terminal shows it),
    then its value."""
    return f"  {ljust(label, width)} {value}"


def report(done: Provisioned) -> str:
    """The text printed after provisioning (without the QR code), in the reader's language
    (names, paths, keys and the hospital's command as they are)."""
    bundle, identity, config = done.bundle, done.identity, done.config
    expires = bundle.certificate().not_valid_after_utc.strftime("%Y-%m-%d")
    device_key = (gettext("%(key)s (new: %(path)s)", key=identity.key_id,
                          path=config.device_key_path) if done.identity_created else
                  gettext("%(key)s (kept: %(path)s)", key=identity.key_id,
                          path=config.device_key_path))
    lines = [
        gettext("provisioned %(box)s from enrolment bundle %(fingerprint)s (issued %(issued)s)",
                box=f"{bundle.clinic}/{bundle.device}", fingerprint=bundle.fingerprint,
                issued=bundle.issued_at),
        _row(gettext("config"), str(done.config_path)),
        _row(gettext("hospital files"), str(done.folder)),
        _row(gettext("broker"), gettext(
            "%(address)s, client certificate valid until %(date)s",
            address=f"{bundle.broker_host}:{bundle.broker_port}", date=expires)),
        _row(gettext("model keys"), names(bundle.signing_key_ids())),
        _row(gettext("device key"), device_key),
    ]
    if done.state_dir_pinned:
        lines.append(_row(gettext("state folder"), gettext(
            "%(path)s (now written in the config)", path=config.state_dir)))
    code = done.code.text()
    lines += [
        gettext("Delete the bundle from the USB stick: it holds this box's TLS key."),
        "",
        gettext("The hospital must enrol this box:"),
        _row(gettext("clinic"), identity.clinic, 7),
        _row(gettext("device"), identity.device, 7),
        _row(gettext("key id"), identity.key_id, 7),
        identity.public_key_pem.rstrip("\n"),
        gettext("At the hospital run (or scan the QR code below):"),
        f"  clinibox central enrol-code {code}",
        "",
    ]
    return "\n".join(lines)


def qr_code(text: str) -> segno.QRCode:
    """The QR code of an enrolment code."""
    return segno.make(text, error="m")


def print_qr(text: str, out: Any = None) -> None:
    """Draw the QR code with half blocks (light modules are drawn, as on a dark terminal)."""
    out = out or sys.stdout
    try:
        qr_code(text).terminal(out=out, compact=True)
    except UnicodeEncodeError:  # a terminal that cannot show the half blocks
        qr_code(text).terminal(out=out)


def cmd_provision(args: argparse.Namespace) -> int:
    """Provision the box from an enrolment bundle and print what the hospital must enrol."""
    try:
        done = provision(Path(args.bundle), config_path(args.config), force=args.force,
                         new_identity=args.new_identity)
    except ProvisionError as exc:
        print(f"clinibox provision: {exc}", file=sys.stderr)
        if exc.written:
            print(gettext("the config was not changed; written before the failure: %(written)s",
                          written=("; " if current() == ENGLISH else "；").join(exc.written)),
                  file=sys.stderr)
        else:
            print(gettext("nothing was changed"), file=sys.stderr)
        return exc.exit_status
    sys.stdout.write(report(done))
    print_qr(done.code.text())
    if args.qr_png:
        qr_code(done.code.text()).save(args.qr_png, scale=8, border=4)
        print(gettext("QR code also written to %(path)s", path=args.qr_png))
    print(gettext("Then restart the services (%(restart)s) and check the box: %(check)s",
                  restart="systemctl restart clinibox clinibox-web",
                  check="clinibox selftest"))
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``provision`` on the main parser."""
    p = with_config(sub.add_parser(
        "provision", help="make this box the hospital's from an enrolment bundle",
        description="Check the bundle, write the hospital's files and the config, create the "
                    "device identity, and print what the hospital must enrol."))
    p.add_argument("bundle", help="the enrolment bundle (clinibox central bundle wrote it)")
    p.add_argument("--force", action="store_true",
                   help="re-provision a box enrolled as another clinic/device (keeps its key)")
    p.add_argument("--new-identity", action="store_true",
                   help="make a new device signing key (the old one is kept, renamed)")
    p.add_argument("--qr-png", metavar="FILE", help="also write the enrolment QR code as PNG")
    p.set_defaults(func=cmd_provision)
