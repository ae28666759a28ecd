"""One validated configuration for the box, read from TOML.

Every field has a default that serves a single box, so the service starts with
no file at all (``clinibox serve``). A file only needs the keys it changes.
Unknown sections or keys and bad values are refused with a message that names
the key, e.g. ``[dicom] port: must be between 1 and 65535, got 0``.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_app.contracts.backends import BACKEND_CHOICES, PRECISIONS
from firmware_app.contracts.egress import IDENTITY
from firmware_app.settings.loader import (
    ConfigError,
    describe_sections,
    in_range,
    load_sections,
    one_of,
    read_toml,
    setting,
)

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_MODELS_DIR = REPO_ROOT / "models"
DEMO_KEY_NAME = "DEMO-ONLY-model-signing.pub"
DEMO_PUBLIC_KEY = BUNDLED_MODELS_DIR / "keys" / DEMO_KEY_NAME
#: the demo key's id (``signing.key_id``): recognised even where its file is not shipped
DEMO_KEY_ID = "67a82491e5b71bd7"

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII, no backslash




def _ae_title(value: Any) -> str | None:
    if not _AE_TITLE.match(value) or not value.strip():
        return f"must be 1-16 printable ASCII characters without backslash, got {value!r}"
    return None


def _ae_titles(value: Any) -> str | None:
    for title in value:
        problem = _ae_title(title)
        if problem:
            return problem
    return None


def _identity(value: Any) -> str | None:
    if not IDENTITY.match(value):
        return f"must be 1-32 lower-case letters, digits or dashes, got {value!r}"
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
    allowed_calling_aets: list[str] = setting(
        _ae_titles, "calling AE titles allowed to connect; empty allows any", factory=list
    )
    max_associations: int = setting(in_range(1, 256), "concurrent associations", 8)
    max_associations_per_peer: int = setting(
        in_range(1, 256), "concurrent associations one address may hold (the rest stay free "
                        "for other modalities)", 4)
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
class LimitsConfig:
    """Limits on what one object may cost to decode."""

    max_rows: int = setting(in_range(8, 65535), "largest image height accepted", 16384)
    max_columns: int = setting(in_range(8, 65535), "largest image width accepted", 16384)
    max_frames: int = setting(in_range(1, 100000), "most frames in one object", 4000)
    max_decoded_mb: int = setting(in_range(1, 65536), "decoded pixel memory per object", 1024)
    sandbox_memory_mb: int = setting(
        in_range(64, 65536), "memory the decoder process may take on top of its code", 2048)
    sandbox_seconds: float = setting(in_range(1, 3600), "longest decode of one object", 60.0)
    max_megapixels: float = setting(
        in_range(0.01, 1000), "largest frame in megapixels (40 admits every full-field "
                            "mammography detector, up to 4728 × 5928)", 40.0)
    min_rows: int = setting(in_range(1, 4096), "smaller images get a quality warning", 64)


@dataclass
class RuntimeConfig:
    """Which runtime backend and artifact run the model."""

    backend: str = setting(one_of(*BACKEND_CHOICES), "backend", "auto")
    precision: str = setting(one_of("auto", *PRECISIONS), "artifact precision", "auto")
    threads: int = setting(in_range(0, 256), "inference threads; 0 lets the runtime decide", 0)
    device: str = setting(doc="OpenVINO device (AUTO, CPU, GPU, NPU)", default="AUTO")


@dataclass
class ModelsConfig:
    """The model package the box runs and the keys it trusts."""

    dir: str = setting(doc="folder of model packages; empty means the bundled models/", default="")
    name: str = setting(doc="package name", default="clinibox-demo-lesion")
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
class WebConfig:
    """The clinic viewer: a Flask app served over HTTPS by gunicorn (``clinibox web``)."""

    enabled: bool = setting(doc="start the viewer with clinibox serve (clinibox serve --no-web "
                                "leaves it to its own service)", default=True)
    host: str = setting(doc="address the viewer listens on", default="0.0.0.0")
    port: int = setting(in_range(1, 65535), "viewer HTTPS port", 8080)
    tls_cert: str = setting(doc="certificate (PEM) the viewer presents; empty means a self-signed "
                                "one made on first start under <state_dir>/keys", default="")
    tls_key: str = setting(doc="private key (PEM) of tls_cert", default="")
    threads: int = setting(in_range(1, 64), "requests served at once", 4)
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
    summary_seconds: float = setting(in_range(1, 86400), "seconds between summaries", 3600.0)
    heartbeat_seconds: float = setting(in_range(1, 86400), "seconds between heartbeats", 300.0)
    outbox_max_messages: int = setting(in_range(10, 10_000_000), "messages kept waiting at most",
                                       100_000)
    audit_days: float = setting(in_range(0, 3650), "days sent messages stay listed for audit", 30.0)
    retry_min_seconds: float = setting(in_range(0.05, 3600), "first reconnect wait", 1.0)
    retry_max_seconds: float = setting(in_range(0.1, 86400), "longest reconnect wait", 300.0)


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
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    web: WebConfig = field(default_factory=WebConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

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
    def trusts_demo_key(self) -> bool:
        """Whether packages signed with the public DEMO-ONLY key would run here."""
        return self.models.trust_demo_key


#: what the box says wherever the demo key is trusted (log, status, self-test, viewer)
DEMO_TRUST_WARNING = ("this box trusts the DEMO-ONLY signing key, whose private half is public: "
                      "anyone can sign a package it will run. For development and "
                      "demonstrations only; set [models] trust_demo_key = false")


def is_demo_key(path: Path) -> bool:
    """Whether the key file at ``path`` is (a copy of) the demo public key."""
    from firmware_app.contracts import signing

    try:
        return signing.key_id(signing.load_public_key(path)) == DEMO_KEY_ID
    except (OSError, ValueError):
        return False


def from_dict(data: dict[str, Any]) -> Config:
    """Build a validated Config from parsed TOML; raise ConfigError naming the key."""
    config = load_sections(data, Config)
    _check_cross_field(config)
    return config


def _check_cross_field(config: Config) -> None:
    dicom = config.dicom
    if dicom.tls_enabled and not (dicom.tls_cert and dicom.tls_key):
        raise ConfigError("[dicom] tls_cert: tls_enabled needs tls_cert and tls_key")
    mqtt = config.mqtt
    if mqtt.host:
        needed = {"[mqtt] ca_file": mqtt.ca_file, "[mqtt] cert_file": mqtt.cert_file,
                  "[mqtt] key_file": mqtt.key_file,
                  "[telemetry] hospital_key": config.telemetry.hospital_key}
        for name, value in needed.items():
            if not value:
                raise ConfigError(f"{name}: needed when [mqtt] host is set")
    if bool(config.web.tls_cert) != bool(config.web.tls_key):
        raise ConfigError("[web] tls_cert: tls_cert and tls_key go together")
    if config.telemetry.retry_min_seconds > config.telemetry.retry_max_seconds:
        raise ConfigError("[telemetry] retry_min_seconds: larger than retry_max_seconds")
    if config.limits.min_rows > min(config.limits.max_rows, config.limits.max_columns):
        raise ConfigError("[limits] min_rows: larger than max_rows or max_columns")


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
    """Render the embedded defaults as a commented TOML example."""
    return describe_sections(
        Config(), "# clinibox configuration: every key is optional; shown with its default.")
