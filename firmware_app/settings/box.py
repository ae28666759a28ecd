"""One validated configuration for the box, read from TOML.

Every field has a default that serves a single box, so the service starts with
no file at all (``clinibox serve``). A file only needs the keys it changes.
Unknown sections or keys and bad values are refused with a message that names
the key, e.g. ``[dicom] port: must be between 1 and 65535, got 0``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinibox_common.bundled import BUNDLED_MODELS_DIR, DEMO_KEY_ID, DEMO_KEY_NAME, DEMO_PUBLIC_KEY
from clinibox_common.contracts.dicom_outputs import DICOM_OUTPUTS, default_outputs, output_keys
from clinibox_common.contracts.egress import IDENTITY
from clinibox_common.contracts.manifest import DEMO_MODEL_NAME
from clinibox_common.i18n import ENGLISH, N_, current, gettext
from clinibox_common.settings_loader import (
    ConfigError,
    coerce,
    describe_sections,
    in_range,
    load_sections,
    names,
    one_of,
    read_toml,
    refused,
    setting,
    suggest,
    toml_value,
    unknown_key,
)
from engine.settings import LimitsConfig, RuntimeConfig
from firmware_app.settings.live import (
    SOURCES_DOC,
    LiveConfig,
    LiveSource,
    check_sources,
    describe_source_example,
)

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII, no backslash




def _ae_title(value: Any) -> str | None:
    """1-16 printable ASCII characters, no backslash (a DICOM AE title)."""
    if not _AE_TITLE.match(value) or not value.strip():
        return gettext("must be 1-16 printable ASCII characters without backslash, got "
                       "%(value)s", value=repr(value))
    return None


def _ae_titles(value: Any) -> str | None:
    """AE titles, each 1-16 printable ASCII characters without backslash."""
    for title in value:
        problem = _ae_title(title)
        if problem:
            return problem
    return None


def _identity(value: Any) -> str | None:
    """1-32 lower-case letters, digits or dashes (a topic level)."""
    if not IDENTITY.fullmatch(value):
        return gettext("must be 1-32 lower-case letters, digits or dashes, got %(value)s",
                       value=repr(value))
    return None


@dataclass
class StorageConfig:
    """Where the box keeps its state: spool, quarantine, databases."""

    state_dir: str = setting(doc="state folder (spool, quarantine, SQLite)", default="var")
    min_free_mb: int = setting(in_range(0, 10_000_000),
                               "refuse new objects below this free disk", 200)
    max_object_mb: int = setting(in_range(1, 4096), "largest DICOM object accepted", 1024)


@dataclass
class DicomConfig:
    """The DICOM Storage SCP (C-ECHO, C-STORE)."""

    enabled: bool = setting(doc="run the Storage SCP", default=True)
    ae_title: str = setting(_ae_title, "our AE title", "CLINIBOX")
    host: str = setting(doc="address to listen on", default="0.0.0.0")
    port: int = setting(in_range(1, 65535), "TCP port", 11112)
    receiver: str = setting(
        one_of("auto", "native", "pynetdicom"),
        'who owns the port: "native" is clinibox-receiver (dcmtk, built by make install), '
        '"pynetdicom" the Python receiver; "auto" takes the native one where it is built',
        "auto")
    allowed_calling_aets: list[str] = setting(
        _ae_titles, "calling AE titles allowed to connect; empty allows any", factory=list
    )
    max_associations: int = setting(
        in_range(1, 256), "concurrent associations; the last free one goes only to an address "
                        "that holds none (others are rejected as busy), so no few modalities "
                        "can take every slot", 8)
    max_associations_per_peer: int = setting(
        in_range(1, 256), "concurrent associations one address may hold (the rest stay free "
                        "for other modalities; never the last free slot, so at most "
                        "max_associations - 1)", 4)
    max_pdu_kb: int = setting(in_range(4, 4096), "largest PDU we accept (advertised to peers), KB",
                              256)
    acse_timeout: float = setting(in_range(1, 3600), "seconds a new connection has to associate "
                                                   "(and to release)", 10.0)
    dimse_timeout: float = setting(in_range(1, 3600), "seconds to wait for DIMSE messages", 60.0)
    network_timeout: float = setting(in_range(1, 86400),
                                     "seconds before an idle link is closed", 60.0)
    tls_enabled: bool = setting(doc="DICOM over TLS", default=False)
    tls_cert: str = setting(doc="server certificate (PEM) when TLS is on", default="")
    tls_key: str = setting(doc="server private key (PEM) when TLS is on", default="")
    tls_ca: str = setting(doc="CA bundle; when set, senders must present a certificate", default="")


@dataclass
class UsbConfig:
    """Import from mounted USB media and plain folders."""

    enabled: bool = setting(doc="watch the import folder", default=True)
    watch_dir: str = setting(doc="folder to watch; empty means <state_dir>/import", default="")
    poll_seconds: float = setting(in_range(0.05, 3600), "seconds between scans", 2.0)
    settle_seconds: float = setting(in_range(0, 3600),
                                    "a file is taken once unchanged this long", 2.0)
    max_depth: int = setting(in_range(1, 64), "deepest folder level scanned", 12)


@dataclass
class WorkerConfig:
    """The processing worker (decode, quality, inference, results)."""

    enabled: bool = setting(doc="process queued objects", default=True)
    max_attempts: int = setting(in_range(1, 100), "tries before an object is marked failed", 3)
    max_frames_per_instance: int = setting(in_range(1, 1000), "frames inferred per multi-frame", 8)
    poll_seconds: float = setting(in_range(0.01, 60), "idle wait between queue checks", 0.2)


@dataclass
class StudiesConfig:
    """When a study counts as complete: its alert, summary and DICOM results wait for it."""

    stable_seconds: float = setting(
        in_range(0.5, 86_400), "a study is complete when no instance of it has arrived for this "
        "long (and every instance received meanwhile is analysed); a later instance updates it",
        60.0)


@dataclass
class ModelsConfig:
    """The model package the box runs and the keys it trusts."""

    dir: str = setting(doc="folder of model packages; empty means the bundled models/", default="")
    name: str = setting(doc="package name", default=DEMO_MODEL_NAME)
    version: str = setting(doc="package version; empty picks the newest", default="")
    trusted_keys: list[str] = setting(
        doc="Ed25519 public keys (PEM) trusted to sign packages (the demo key among them "
            "counts only with trust_demo_key)", factory=list,
    )
    trust_demo_key: bool = setting(
        doc="also trust the DEMO-ONLY key, whose private half is public in the source: for "
            "development and demonstrations (make run); installed and provisioned boxes set "
            "false", default=True)
    store_dir: str = setting(
        doc="where `clinibox model install` keeps installed packages; empty means "
            "<state_dir>/models", default="")
    trial_jobs: int = setting(in_range(1, 100_000), "analyses a newly installed package must "
                              "complete without a worker crash before it is kept", 20)
    trial_hours: float = setting(in_range(0.01, 720),
                                 "hours of running without a crash after which "
                                 "a newly installed package is kept", 24.0)


@dataclass
class UpdatesConfig:
    """Model packages the hospital's rollouts bring over the broker link."""

    max_kbps: float = setting(in_range(0, 1_000_000),
                              "the most a package download may use of the clinic's link, in "
                              "kilobits a second; 0 sets no cap", 256.0)
    min_free_mb: int = setting(in_range(0, 1_000_000),
                               "free disk a download must leave beyond the package and its "
                               "unpacked copy (MB); a box without it refuses the offer "
                               "(no_space)", 200)
    chunk_timeout_seconds: float = setting(in_range(1, 3600),
                                           "seconds to wait for one chunk before asking again",
                                           60.0)
    retry_seconds: float = setting(in_range(0.01, 86_400),
                                   "seconds to wait after the link failed a chunk", 30.0)


@dataclass
class RetentionConfig:
    """When received images are deleted (results are always kept)."""

    image_days: float = setting(in_range(0, 36500), "delete images this many days after they "
                                "arrived; 0 keeps them until the disk fills", 30.0)
    quarantine_days: float = setting(in_range(0, 36500),
                                     "delete quarantined objects this many days "
                                     "after they arrived; 0 keeps them", 90.0)
    max_disk_used_pct: float = setting(in_range(1, 100), "above this disk use, delete the oldest "
                                       "safe images first until below it", 85.0)


@dataclass
class AuditConfig:
    """The access audit trail (``clinibox audit``, the viewer's /audit page)."""

    keep_days: float = setting(in_range(0, 36500), "keep audit rows this many days (the hourly "
                               "retention pass prunes older ones); 0 keeps them all", 365.0)
    max_mb: float = setting(in_range(0, 10_000_000), "past this many MB of audit rows, the device "
                          "page and clinibox status raise an alarm (no row is ever dropped: "
                          "export, then shorten keep_days); 0: no alarm", 256.0)


@dataclass
class WebConfig:
    """The clinic viewer: a Flask app served over HTTPS by gunicorn (``clinibox web``)."""

    enabled: bool = setting(doc="start the viewer with clinibox serve (clinibox serve --no-web "
                                "leaves it to its own service)", default=True)
    host: str = setting(doc="address the viewer listens on", default="0.0.0.0")
    port: int = setting(in_range(1, 65535), "viewer HTTPS port", 8080)
    tls_cert: str = setting(doc="certificate (PEM) the viewer presents; empty means a self-signed "
                                "one made on first start under <state_dir>/keys", default="")
    tls_key: str = setting(doc="private key (PEM) of tls_cert", default="")
    threads: int = setting(in_range(1, 64), "requests served at once (each open live page "
                           "holds one while it waits for the next frame)", 8)
    session_idle_minutes: float = setting(in_range(1, 1440), "a session ends after this long idle",
                                          30.0)
    session_max_hours: float = setting(in_range(0.1, 168), "a session ends this long after login",
                                       12.0)
    login_free_failures: int = setting(
        in_range(1, 100), "failed logins for one account from one address before each further "
                        "try waits (2, 4, 8 … s)", 5)
    login_free_failures_per_address: int = setting(
        in_range(1, 1000), "failed logins from one address, all accounts, before its tries wait",
        20)
    login_max_delay_seconds: float = setting(in_range(1, 86400),
                                             "longest wait between login tries", 900.0)
    refresh_seconds: float = setting(in_range(1, 3600), "how often open worklists update", 5.0)
    page_size: int = setting(in_range(10, 1000), "worklist rows per page", 50)
    language: str = setting(
        one_of("", "en", "zh_CN"), 'viewer language: "" follows the browser (Accept-Language, '
        'then English), "zh_CN" or "en" every browser; each user may switch in the page header '
        "(the clinibox commands follow LC_ALL/LANG, then this)", "")


@dataclass
class MqttConfig:
    """The TLS link to the central hospital's broker; disabled until a host is set."""

    host: str = setting(doc="broker host; empty keeps messages waiting in the outbox", default="")
    port: int = setting(in_range(1, 65535), "broker TLS port", 8883)
    ca_file: str = setting(doc="CA bundle (PEM) that signed the broker's certificate", default="")
    cert_file: str = setting(doc="this box's client certificate (PEM, CN clinic/device)",
                             default="")
    key_file: str = setting(doc="private key (PEM) of the client certificate", default="")
    keepalive: int = setting(in_range(5, 3600), "seconds between MQTT keep-alive pings", 60)
    session_expiry_seconds: int = setting(
        in_range(0, 4_294_967_294), "how long the broker keeps this box's session (and the "
        "hospital's verdicts for it, QoS 1) while the box is away", 30 * 86400)


@dataclass
class TelemetryConfig:
    """What the box tells the hospital, and the keys that protect it."""

    clinic: str = setting(_identity, "clinic id (a topic level: a-z, 0-9, dashes)", "unassigned")
    device: str = setting(_identity, "device id (a topic level: a-z, 0-9, dashes)", "clinibox")
    hospital_key: str = setting(
        doc="the hospital's X25519 public key (PEM); messages are encrypted to it", default="")
    device_key: str = setting(
        doc="this box's Ed25519 signing key (PEM); empty means <state_dir>/keys/device.pem, "
            "made on first start", default="")
    device_secret: str = setting(
        doc="secret for the keyed-hash study references; empty means "
            "<state_dir>/keys/study-ref.secret, made on first start", default="")
    downlink_key: str = setting(
        doc="this box's X25519 key (PEM) the hospital encrypts its verdicts to; empty means "
            "<state_dir>/keys/device-downlink.key, made on first start", default="")
    hospital_signing_key: str = setting(
        doc="the hospital's Ed25519 public key (PEM) its verdicts are signed with; empty: no "
            "verdicts come down to this box", default="")
    summary_seconds: float = setting(in_range(1, 86400), "seconds between summaries", 3600.0)
    heartbeat_seconds: float = setting(in_range(1, 86400), "seconds between heartbeats", 300.0)
    outbox_max_messages: int = setting(in_range(10, 10_000_000), "messages kept waiting at most",
                                       100_000)
    audit_days: float = setting(in_range(0, 3650), "days sent messages stay listed for audit", 30.0)
    retry_min_seconds: float = setting(in_range(0.05, 3600), "first reconnect wait", 1.0)
    retry_max_seconds: float = setting(in_range(0.1, 86400), "longest reconnect wait", 300.0)


#: the kinds of DICOM result document a PACS destination may be sent (``send``): the keys of
#: the table of DICOM outputs (``contracts/dicom_outputs.py``) when this module was imported;
#: ``send`` is checked against the table itself
PACS_DOCUMENT_KINDS = output_keys()

_DESTINATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


def _destination_name(value: Any) -> str | None:
    """1-32 letters, digits, dots, dashes or underscores, a letter or digit first."""
    if not _DESTINATION_NAME.match(value):
        return gettext("must be 1-32 letters, digits, dots, dashes or underscores (a letter or "
                       "digit first), got %(value)s", value=repr(value))
    return None


def _optional_ae_title(value: Any) -> str | None:
    """empty, or an AE title (1-16 printable ASCII characters, no backslash)."""
    return _ae_title(value) if value else None


def _host(value: Any) -> str | None:
    """a host name or address (no spaces)."""
    if not value.strip() or any(c.isspace() for c in value):
        return gettext("must be a host name or address, got %(value)s", value=repr(value))
    return None


def _document_kinds(value: Any) -> str | None:
    """one or more keys of the DICOM outputs table (contracts/dicom_outputs.py)."""
    unknown = [kind for kind in value if kind not in DICOM_OUTPUTS]
    if unknown or not value:
        return gettext("must list one or more of %(options)s; got %(value)s",
                       options=names(output_keys()), value=repr(value))
    return None


@dataclass
class PacsDestination:
    """One PACS (or other Storage SCP) on the clinic's network that receives the results."""

    name: str = setting(_destination_name, "a name for the log and the status (unique)", "pacs")
    ae_title: str = setting(_ae_title, "the destination's (called) AE title", "PACS")
    host: str = setting(_host, "host name or address of the destination", "192.0.2.10")
    port: int = setting(in_range(1, 65535), "its DICOM port", 104)
    send: list[str] = setting(_document_kinds, "which results it gets: any of "
                              + ", ".join(f'"{kind}"' for kind in PACS_DOCUMENT_KINDS),
                              factory=default_outputs)
    tls: bool = setting(doc="DICOM over TLS", default=False)
    ca_file: str = setting(doc="CA bundle (PEM) that signed the destination's certificate; "
                               "empty trusts the system's CAs", default="")
    cert_file: str = setting(doc="this box's client certificate (PEM), if the destination "
                                 "asks for one", default="")
    key_file: str = setting(doc="private key (PEM) of cert_file", default="")


#: the documentation line of ``[pacs] destinations``; ``describe_defaults`` replaces that
#: entry with a commented ``[[pacs.destinations]]`` example
_DESTINATIONS_DOC = ("the destinations: one [[pacs.destinations]] table each; none by default "
                     "(nothing is sent)")


@dataclass
class PacsConfig:
    """Sending the DICOM results (SR, SEG, key image) back to the clinic's PACS."""

    calling_ae_title: str = setting(_optional_ae_title, "our (calling) AE title when sending; "
                                    "empty means [dicom] ae_title", "")
    retry_min_seconds: float = setting(in_range(0.05, 3600),
                                       "first wait before a failed document is tried again "
                                       "(doubles with each failure)", 5.0)
    retry_max_seconds: float = setting(in_range(0.1, 86400),
                                       "longest wait between tries of a document", 300.0)
    max_refusals: int = setting(in_range(1, 1000),
                                "C-STORE failure statuses before a document is held "
                                "(network failures do not count)", 5)
    connect_timeout: float = setting(in_range(1, 3600), "seconds to open the connection and "
                                     "associate", 30.0)
    dimse_timeout: float = setting(in_range(1, 3600), "seconds to wait for each C-STORE "
                                   "response", 120.0)
    network_timeout: float = setting(in_range(1, 86400),
                                     "seconds before a silent link is closed", 120.0)
    destinations: list[PacsDestination] = setting(doc=_DESTINATIONS_DOC, factory=list)


def _regex(value: Any) -> str | None:
    """a regular expression (Python re)."""
    try:
        re.compile(value)
    except re.error as exc:
        return not_a_regex(exc, value)
    return None


def not_a_regex(exc: re.error, value: str) -> str:
    """Why ``value`` is not a regular expression: in English with ``re``'s own words, in
    another language where it goes wrong (the character's position)."""
    if current() == ENGLISH:
        return f"not a regular expression ({exc}): {value!r}"
    if exc.pos is not None:
        return gettext("not a regular expression (wrong at character %(position)s): %(value)s",
                       position=exc.pos + 1, value=repr(value))
    return gettext("not a regular expression: %(value)s", value=repr(value))


def _upper_list(value: Any) -> str | None:
    """values, none of them empty."""
    if any(not str(v).strip() for v in value):
        return gettext("must not hold empty values, got %(value)s", value=repr(value))
    return None


@dataclass
class RoutingRule:
    """One rule choosing which model analyses a series (as mercure routes): every criterion
    given must hold; an empty one holds for any image."""

    name: str = setting(_destination_name, "a name for the log and the reasons (unique)", "rule")
    model: str = setting(doc="package name of the model that analyses what the rule matches",
                         default=DEMO_MODEL_NAME)
    modality: list[str] = setting(_upper_list, "modalities, any of (e.g. [\"CT\", \"US\"])",
                                  factory=list)
    body_part: list[str] = setting(_upper_list, "Body Part Examined, any of (case-insensitive)",
                                   factory=list)
    sop_class: list[str] = setting(_upper_list, "SOP Class UIDs, any of", factory=list)
    series_description: str = setting(_regex, "regular expression searched in Series "
                                      "Description (case-insensitive)", "")
    min_rows: int = setting(in_range(0, 65535), "fewest rows (0: no bound)", 0)
    max_rows: int = setting(in_range(0, 65535), "most rows (0: no bound)", 0)
    min_columns: int = setting(in_range(0, 65535), "fewest columns (0: no bound)", 0)
    max_columns: int = setting(in_range(0, 65535), "most columns (0: no bound)", 0)


#: the documentation line of ``[routing] rules`` (shown as a commented example table)
_RULES_DOC = ("the rules: one [[routing.rules]] table each, tried in order; none by default "
              "(the model's own modality list decides)")


@dataclass
class RoutingConfig:
    """Which model analyses a series: rules on its DICOM header, first match wins. An image
    no rule matches is ``not_analysed`` with its reason (kept apart from quarantine)."""

    rules: list[RoutingRule] = setting(doc=_RULES_DOC, factory=list)


@dataclass
class LoggingConfig:
    """Log verbosity."""

    level: str = setting(one_of("DEBUG", "INFO", "WARNING", "ERROR"), "log level", "INFO")


@dataclass
class Config:
    """The whole configuration of one box."""

    storage: StorageConfig = field(default_factory=StorageConfig)
    dicom: DicomConfig = field(default_factory=DicomConfig)
    usb: UsbConfig = field(default_factory=UsbConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    studies: StudiesConfig = field(default_factory=StudiesConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    updates: UpdatesConfig = field(default_factory=UpdatesConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    web: WebConfig = field(default_factory=WebConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    pacs: PacsConfig = field(default_factory=PacsConfig)
    live: LiveConfig = field(default_factory=LiveConfig)

    # -- derived paths -------------------------------------------------
    @property
    def state_dir(self) -> Path:
        """The state folder, absolute."""
        return Path(self.storage.state_dir).expanduser().resolve()

    @property
    def database_path(self) -> Path:
        """The SQLite database holding the queue and the results."""
        return self.state_dir / "clinibox.db"

    @property
    def spool_dir(self) -> Path:
        """Where received objects land durably."""
        return self.state_dir / "spool"

    @property
    def quarantine_dir(self) -> Path:
        """Where bad objects are kept with their reason."""
        return self.state_dir / "quarantine"

    @property
    def import_dir(self) -> Path:
        """The watched USB/folder import location."""
        if self.usb.watch_dir:
            return Path(self.usb.watch_dir).expanduser().resolve()
        return self.state_dir / "import"

    @property
    def models_dir(self) -> Path:
        """The folder of model packages."""
        if self.models.dir:
            return Path(self.models.dir).expanduser().resolve()
        return BUNDLED_MODELS_DIR

    @property
    def model_store_dir(self) -> Path:
        """Where ``clinibox model install`` keeps installed packages and their state."""
        if self.models.store_dir:
            return Path(self.models.store_dir).expanduser().resolve()
        return self.state_dir / "models"

    @property
    def keys_dir(self) -> Path:
        """Where the box keeps the keys it makes for itself."""
        return self.state_dir / "keys"

    @property
    def device_key_path(self) -> Path:
        """This box's Ed25519 signing key for outbound messages."""
        value = self.telemetry.device_key
        return Path(value).expanduser().resolve() if value else self.keys_dir / "device.pem"

    @property
    def device_secret_path(self) -> Path:
        """The secret behind the keyed-hash study references."""
        value = self.telemetry.device_secret
        return (Path(value).expanduser().resolve() if value
                else self.keys_dir / "study-ref.secret")

    @property
    def downlink_key_path(self) -> Path:
        """This box's X25519 key for the hospital's downlink (verdicts are encrypted to it)."""
        value = self.telemetry.downlink_key
        return (Path(value).expanduser().resolve() if value
                else self.keys_dir / "device-downlink.key")

    @property
    def web_cert_paths(self) -> tuple[Path, Path]:
        """The viewer's TLS certificate and key (configured, or the box's self-signed pair)."""
        if self.web.tls_cert:
            return (Path(self.web.tls_cert).expanduser().resolve(),
                    Path(self.web.tls_key).expanduser().resolve())
        return self.keys_dir / "web-cert.pem", self.keys_dir / "web-key.pem"

    @property
    def trusted_key_paths(self) -> list[Path]:
        """Public keys trusted for package signatures: ``[models] trusted_keys``, less any
        copy of the demo key, plus the demo key when ``trust_demo_key``."""
        keys = [Path(p).expanduser().resolve() for p in self.models.trusted_keys]
        keys = [k for k in keys if not is_demo_key(k)]
        return [*keys, self.demo_key_path] if self.models.trust_demo_key else keys

    @property
    def demo_key_path(self) -> Path:
        """The demo public key: in the checkout, or beside the installed packages."""
        shipped = self.models_dir / "keys" / DEMO_KEY_NAME
        return shipped if shipped.exists() else DEMO_PUBLIC_KEY

    @property
    def dicom_out_dir(self) -> Path:
        """Where the DICOM results wait (written durably) until every destination has them."""
        return self.state_dir / "dicom_out"

    @property
    def pacs_calling_ae_title(self) -> str:
        """The AE title the box calls the PACS with: ``[pacs] calling_ae_title`` or its own."""
        return self.pacs.calling_ae_title or self.dicom.ae_title

    @property
    def trusts_demo_key(self) -> bool:
        """Whether packages signed with the public DEMO-ONLY key would run here."""
        return self.models.trust_demo_key


#: what the box says wherever the demo key is trusted (log, status, self-test, viewer)
#: (English, as logged; marked for the catalog: the viewer and the self-test translate it)
DEMO_TRUST_WARNING = N_("this box trusts the DEMO-ONLY signing key, whose private half is "
                        "public: anyone can sign a package it will run. For development and "
                        "demonstrations only; set [models] trust_demo_key = false")


def is_demo_key(path: Path) -> bool:
    """Whether the key file at ``path`` is (a copy of) the demo public key."""
    from clinibox_common.contracts import signing

    try:
        return signing.key_id(signing.load_public_key(path)) == DEMO_KEY_ID
    except (OSError, ValueError):
        return False


def from_dict(data: dict[str, Any]) -> Config:
    """Build a validated Config from parsed TOML; raise ConfigError naming the key."""
    data = dict(data)
    tables: dict[tuple[str, str], Any] = {}
    for section, key in (("pacs", "destinations"), ("routing", "rules"), ("live", "sources")):
        values = data.get(section)
        if isinstance(values, dict) and key in values:
            values = dict(values)
            tables[(section, key)] = values.pop(key)
            data[section] = values
    config = load_sections(data, Config)
    config.pacs.destinations = load_destinations(tables.get(("pacs", "destinations"), []))
    config.routing.rules = load_rules(tables.get(("routing", "rules"), []))
    config.live.sources = _load_tables(tables.get(("live", "sources"), []), LiveSource,
                                       "live.sources", ("name", "url"))
    check_sources(config.live.sources)
    _check_cross_field(config)
    return config


def _load_tables(raw: Any, cls: type, where: str, required: tuple[str, str]) -> list:
    """Build and check the ``[[<where>]]`` tables as ``cls`` objects (unique names);
    ConfigError naming the key."""
    if not isinstance(raw, list) or not all(isinstance(table, dict) for table in raw):
        section, key = where.split(".")
        raise ConfigError(gettext("[%(section)s] %(key)s: must be [[%(where)s]] tables",
                                  section=section, key=key, where=where))
    specs = {spec.name: spec for spec in dataclasses.fields(cls)}
    built = []
    for number, table in enumerate(raw, start=1):
        here = f"{where} {number}"
        if any(name not in table for name in required):
            raise ConfigError(gettext("[%(where)s]: needs at least %(first)s and %(second)s",
                                      where=here, first=required[0], second=required[1]))
        item = cls()
        for key, value in table.items():
            if key not in specs:
                raise ConfigError(unknown_key(here, key, suggest(key, list(specs))))
            value = coerce(here, key, str(specs[key].type), value)
            check = specs[key].metadata.get("check")
            problem = check(value) if check else None
            if problem:
                raise ConfigError(refused(f"[{here}] {key}", problem))
            setattr(item, key, value)
        built.append(item)
    names = [item.name for item in built]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(gettext("[%(where)s] name: %(name)s is used more than once",
                                      where=where, name=repr(name)))
    return built


def load_destinations(raw: Any) -> list[PacsDestination]:
    """Build and check the ``[[pacs.destinations]]`` tables; ConfigError naming the key."""
    destinations = _load_tables(raw, PacsDestination, "pacs.destinations", ("name", "host"))
    for number, destination in enumerate(destinations, start=1):
        _check_destination(f"pacs.destinations {number}", destination)
    return destinations


def load_rules(raw: Any) -> list[RoutingRule]:
    """Build and check the ``[[routing.rules]]`` tables; ConfigError naming the key."""
    rules = _load_tables(raw, RoutingRule, "routing.rules", ("name", "model"))
    for rule in rules:
        rule.modality = [m.strip().upper() for m in rule.modality]
        rule.body_part = [b.strip().upper() for b in rule.body_part]
        rule.sop_class = [c.strip() for c in rule.sop_class]
    return rules


def _check_destination(where: str, destination: PacsDestination) -> None:
    if bool(destination.cert_file) != bool(destination.key_file):
        raise ConfigError(gettext("[%(where)s] cert_file: cert_file and key_file go together",
                                  where=where))
    if not destination.tls and (destination.ca_file or destination.cert_file):
        raise ConfigError(gettext("[%(where)s] tls: ca_file, cert_file and key_file need tls = "
                                  "true", where=where))


def _check_cross_field(config: Config) -> None:
    dicom = config.dicom
    if dicom.tls_enabled and not (dicom.tls_cert and dicom.tls_key):
        raise ConfigError(gettext("[dicom] tls_cert: tls_enabled needs tls_cert and tls_key"))
    mqtt = config.mqtt
    if mqtt.host:
        needed = {"[mqtt] ca_file": mqtt.ca_file, "[mqtt] cert_file": mqtt.cert_file,
                  "[mqtt] key_file": mqtt.key_file,
                  "[telemetry] hospital_key": config.telemetry.hospital_key}
        for name, value in needed.items():
            if not value:
                raise ConfigError(gettext("%(name)s: needed when [mqtt] host is set",
                                          name=name))
    if bool(config.web.tls_cert) != bool(config.web.tls_key):
        raise ConfigError(gettext("[web] tls_cert: tls_cert and tls_key go together"))
    if config.pacs.retry_min_seconds > config.pacs.retry_max_seconds:
        raise ConfigError(gettext("%(section)s retry_min_seconds: larger than "
                                  "retry_max_seconds", section="[pacs]"))
    if config.telemetry.retry_min_seconds > config.telemetry.retry_max_seconds:
        raise ConfigError(gettext("%(section)s retry_min_seconds: larger than "
                                  "retry_max_seconds", section="[telemetry]"))
    if config.limits.min_rows > min(config.limits.max_rows, config.limits.max_columns):
        raise ConfigError(gettext("[limits] min_rows: larger than max_rows or max_columns"))


#: names the config file when no ``--config`` is given (set by the installed units and wrapper)
CONFIG_ENV = "CLINIBOX_CONFIG"


def load(path: str | Path | None = None) -> Config:
    """Load the config file at ``path``, else ``$CLINIBOX_CONFIG``, else the embedded defaults."""
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is None:
        return Config()
    return from_dict(read_toml(path))


def describe_defaults() -> str:
    """Render the embedded defaults as a commented TOML example.

    ``[pacs] destinations`` is shown as a commented ``[[pacs.destinations]]`` table
    (there is none by default), ready to be uncommented.
    """
    text = describe_sections(
        Config(), "# clinibox configuration: every key is optional; shown with its default.")
    for doc, key in ((_DESTINATIONS_DOC, "destinations"), (_RULES_DOC, "rules"),
                     (SOURCES_DOC, "sources")):
        entry = f"# {doc}\n{key} = []\n"
        assert entry in text, f"describe_sections renders {key} as documented"
        text = text.replace(entry, "", 1)
    return (text + "\n" + describe_destination_example() + "\n\n" + describe_rule_example()
            + "\n\n" + describe_source_example())


def describe_rule_example() -> str:
    """A commented ``[[routing.rules]]`` table with every key (the example config's end)."""
    lines = ["# Routing rules: none by default (the model's own modality list decides). One",
             "# table per rule, tried in order; the first that matches picks the model",
             "# (name and model are required):",
             "# [[routing.rules]]"]
    example = RoutingRule(name="ct-chest", modality=["CT"], body_part=["CHEST"],
                          series_description="chest|thorax")
    for spec in dataclasses.fields(example):
        lines.append(f"# # {spec.metadata.get('doc', '')}")
        lines.append(f"# {spec.name} = {toml_value(getattr(example, spec.name))}")
    return "\n".join(lines)


def describe_destination_example() -> str:
    """A commented ``[[pacs.destinations]]`` table with every key (the last part of the
    example config)."""
    lines = ["# PACS destinations: none by default, so nothing is sent. One table per",
             "# destination; uncomment and edit (name and host are required):",
             "# [[pacs.destinations]]"]
    example = PacsDestination()
    for spec in dataclasses.fields(example):
        lines.append(f"# # {spec.metadata.get('doc', '')}")
        lines.append(f"# {spec.name} = {toml_value(getattr(example, spec.name))}")
    return "\n".join(lines)
