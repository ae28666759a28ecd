"""``clinibox central check-broker``: Mosquitto's set-up checked before the broker is started.

A broker set up from the docs can fail in ways that say little: Mosquitto drops to its own
user (``user``, ``mosquitto`` by default) before it reads its certificates, so a key only root
may read stops it at start with a bare "Unable to load server key file"; a certificate that is
not the key's, or not from the hospital CA, fails every box's handshake; an ACL without the
downlink lines lets alerts up and nothing down. :func:`check` reads the configuration as
Mosquitto does (the main file and every ``*.conf`` of its ``include_dir``) and returns one
:class:`Finding` a problem, each a code (:class:`BrokerProblem`) with the file it concerns and
the fix in words, in the current language (:func:`problem_words` says the code); the file
names, options and commands in the fix stay as they are.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from clinibox_common.contracts.words import Word
from clinibox_common.i18n import N_, gettext
from clinibox_common.i18n.error_words import error_words

#: Mosquitto's configuration on Debian
DEFAULT_CONF = Path("/etc/mosquitto/mosquitto.conf")
#: the user Mosquitto drops to when the configuration names none
DEFAULT_USER = "mosquitto"
#: the ACL lines the boxes and the receiver need (``docs/hospital/broker.md``)
BOX_LINES = ("pattern write clinibox/%u/alert", "pattern write clinibox/%u/summary",
             "pattern write clinibox/%u/status", "pattern write clinibox/%u/event",
             "pattern read clinibox-downlink/%u", "pattern read clinibox-packages/#")
RECEIVER_LINES = ("topic read clinibox/#", "topic write clinibox-downlink/#",
                  "topic write clinibox-packages/#")


class BrokerProblem(Word):
    """What is wrong with the broker's set-up."""

    MISSING = "missing"
    """A file the configuration names does not exist."""
    UNREADABLE = "unreadable"
    """The broker's user cannot read a file it needs."""
    KEY_EXPOSED = "key_exposed"
    """The broker's private key may be read by every user."""
    NOT_PEM = "not_pem"
    """A certificate or key that is not PEM."""
    KEY_MISMATCH = "key_mismatch"
    """The certificate is not the key's."""
    NOT_FROM_CA = "not_from_ca"
    """The broker's certificate is not signed by the CA the configuration names."""
    TLS_OFF = "tls_off"
    """No listener with a certificate, or client certificates not required."""
    ACL = "acl"
    """The ACL lacks lines the boxes or the receiver need."""


#: each problem in words (English: the code, as ``check-broker`` always printed it)
PROBLEM_WORDS = {
    BrokerProblem.MISSING: N_("file missing"),
    BrokerProblem.UNREADABLE: N_("file unreadable by the broker"),
    BrokerProblem.KEY_EXPOSED: N_("private key readable by everyone"),
    BrokerProblem.NOT_PEM: N_("not PEM"),
    BrokerProblem.KEY_MISMATCH: N_("certificate and key do not pair"),
    BrokerProblem.NOT_FROM_CA: N_("certificate not from the CA"),
    BrokerProblem.TLS_OFF: N_("TLS not required"),
    BrokerProblem.ACL: N_("ACL incomplete"),
}


def problem_words(problem: BrokerProblem) -> str:
    """A problem for a person: its code in English, its words in another language."""
    from clinibox_common.i18n import ENGLISH, current

    return problem.value if current() == ENGLISH else gettext(PROBLEM_WORDS[problem])


@dataclass
class BrokerConf:
    """The options of Mosquitto's configuration that the check reads."""

    user: str = DEFAULT_USER
    options: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Finding:
    """One problem: its code, the file it concerns, and the fix in words."""

    problem: BrokerProblem
    path: str
    fix: str


def read_conf(path: Path) -> BrokerConf:
    """The options of ``path`` and of every ``*.conf`` in its ``include_dir`` (later wins)."""
    conf = BrokerConf()
    pending = [Path(path)]
    while pending:
        current = pending.pop(0)
        conf.files.append(current)
        for raw in current.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, _, value = line.partition(" ")
            value = value.strip()
            if name == "include_dir":
                pending.extend(sorted(Path(value).glob("*.conf")))
            elif name == "user":
                conf.user = value
            else:
                conf.options[name] = value
    return conf


def _readable_by(path: Path, user: str) -> bool:
    """Whether ``user`` may read ``path`` (and walk every folder above it), by its modes."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return True  # no such user: Mosquitto stays root (and says so itself)
    groups = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem} | {account.pw_gid}
    if account.pw_uid == 0:
        return True

    def allows(info: os.stat_result, owner: int, group: int, other: int) -> bool:
        if info.st_uid == account.pw_uid:
            return bool(info.st_mode & owner)
        if info.st_gid in groups:
            return bool(info.st_mode & group)
        return bool(info.st_mode & other)

    resolved = path.resolve()
    for folder in resolved.parents:
        if not allows(folder.stat(), stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            return False
    return allows(resolved.stat(), stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)


def _files(conf: BrokerConf, user: str) -> list[Finding]:
    found: list[Finding] = []
    for option in ("cafile", "certfile", "keyfile", "acl_file"):
        value = conf.options.get(option)
        if not value:
            continue
        path = Path(value)
        if not path.is_file():
            found.append(Finding(BrokerProblem.MISSING, value, gettext(
                "%(option)s %(path)s does not exist: copy the file there, or correct the path "
                "in the configuration", option=option, path=value)))
        elif not _readable_by(path, user):
            found.append(Finding(BrokerProblem.UNREADABLE, value, gettext(
                "Mosquitto reads %(option)s as the user %(user)s, who cannot read %(path)s: "
                "%(command)s", option=option, user=user, path=value,
                command=f"chgrp {user} {value} && chmod 0640 {value}")))
        elif option == "keyfile" and path.stat().st_mode & stat.S_IROTH:
            found.append(Finding(BrokerProblem.KEY_EXPOSED, value, gettext(
                "every user of this machine may read the broker's private key: %(command)s",
                command=f"chgrp {user} {value} && chmod 0640 {value}")))
    return found


def _certificates(conf: BrokerConf) -> list[Finding]:
    """The broker's certificate: PEM, its key's, signed by the CA."""
    names = {o: conf.options.get(o) for o in ("cafile", "certfile", "keyfile")}
    if not all(names.values()) or not all(Path(v).is_file() for v in names.values() if v):
        return []
    ca_path, cert_path, key_path = (str(names[o]) for o in ("cafile", "certfile", "keyfile"))
    try:
        ca = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        return [Finding(BrokerProblem.NOT_PEM, f"{ca_path}, {cert_path}, {key_path}", gettext(
            "cafile, certfile and keyfile must be PEM (an unencrypted key): %(why)s",
            why=error_words(exc)))]
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    found: list[Finding] = []
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        found.append(Finding(BrokerProblem.KEY_MISMATCH, cert_path, gettext(
            "%(cert)s is not the certificate of %(key)s: install the pair made together "
            "(server.pem and server.key)", cert=cert_path, key=key_path)))
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        found.append(Finding(BrokerProblem.NOT_FROM_CA, cert_path, gettext(
            "%(cert)s is not signed by the CA %(ca)s: the boxes would refuse the broker; issue "
            "it with the hospital CA", cert=cert_path, ca=ca_path)))
    return found


def _tls(conf: BrokerConf) -> list[Finding]:
    wanted = {"require_certificate": "true", "use_identity_as_username": "true",
              "allow_anonymous": "false"}
    wrong = [f"{k} {v}" for k, v in wanted.items() if conf.options.get(k, "").lower() != v]
    if "listener" not in conf.options or "certfile" not in conf.options:
        wrong.insert(0, gettext("%(listener)s with cafile, certfile and keyfile",
                                listener="listener 8883"))
    if not wrong:
        return []
    return [Finding(BrokerProblem.TLS_OFF, str(conf.files[0]), gettext(
        "the boxes need TLS with client certificates; add: %(lines)s",
        lines=gettext("; ").join(wrong)))]


def _acl(conf: BrokerConf, receiver: str) -> list[Finding]:
    value = conf.options.get("acl_file")
    if not value or not Path(value).is_file():
        return [] if value else [Finding(BrokerProblem.ACL, str(conf.files[0]), gettext(
            "no acl_file: every client could read every box's messages; add acl_file with "
            "the ACL of the docs"))]
    lines = [" ".join(line.split()) for line in Path(value).read_text(
        encoding="utf-8").splitlines() if line.strip() and not line.strip().startswith("#")]
    missing = [line for line in BOX_LINES if line not in lines]
    user_line = f"user {receiver}"
    if user_line not in lines:
        missing += [user_line, *RECEIVER_LINES]
    else:
        after = lines[lines.index(user_line) + 1:]
        block = after[:next((i for i, line in enumerate(after) if line.startswith("user ")),
                            len(after))]
        missing += [line for line in RECEIVER_LINES if line not in block]
    if not missing:
        return []
    return [Finding(BrokerProblem.ACL, value, gettext(
        "the ACL lacks: %(lines)s", lines=gettext("; ").join(missing)))]


def check(path: Path = DEFAULT_CONF, *, receiver: str = "central-receiver") -> list[Finding]:
    """Every problem of the broker's configuration at ``path`` (empty: ready to start)."""
    conf = read_conf(path)
    return [*_files(conf, conf.user), *_certificates(conf), *_tls(conf),
            *_acl(conf, receiver)]
