"""The receiver's configuration, read from TOML like the box's own.

Every key has a default, so a file only needs what it changes. Unknown
sections or keys and bad values are refused with a message naming the key,
e.g. ``[health] drift_psi: must be between 0.001 and 10.0, got 0.0``. The
field machinery (``_key``, ``load_sections``, ``describe_sections``) is the
box's, from ``clinibox_common.settings_loader``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinibox_common.i18n import gettext
from clinibox_common.settings_loader import (
    ConfigError,
    describe_sections,
    in_range,
    installed,
    load_sections,
    one_of,
    read_toml,
    setting,
)

__all__ = [
    "AlertsConfig",
    "CentralConfig",
    "ConfigError",
    "DatabaseConfig",
    "DownlinkConfig",
    "HealthConfig",
    "KeysConfig",
    "MqttConfig",
    "NotifyConfig",
    "WebConfig",
    "database_kind",
    "describe_defaults",
    "from_dict",
    "load",
]

_SQLITE_PREFIX = "sqlite://"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def _database_url(value: Any) -> str | None:
    """sqlite:///PATH, postgresql://USER@HOST:PORT/DB or a bare path."""
    if not value.strip():
        return gettext("must not be empty")
    if "://" in value and not value.startswith((_SQLITE_PREFIX, *_POSTGRES_PREFIXES)):
        return gettext("must be %(sqlite)s, %(postgresql)s or a path; got %(value)s",
                       sqlite="sqlite:///PATH", postgresql="postgresql://USER@HOST:PORT/DB",
                       value=repr(value))
    if value.startswith(_SQLITE_PREFIX) and not value[len(_SQLITE_PREFIX):].startswith("/"):
        return gettext("a SQLite URL is %(relative)s or %(absolute)s; got %(value)s",
                       relative="sqlite:///relative.db", absolute="sqlite:////absolute.db",
                       value=repr(value))
    return None


#: A rollout's canary count and wave size (boxes): the one range that these settings, the
#: console's rollout form, ``clinibox central rollout`` and ``central.rollouts.create`` check
#: (``central.rollouts.waves_problem``).
CANARY_RANGE = (0, 100_000)
WAVE_SIZE_RANGE = (1, 100_000)


def _group(value: Any) -> str | None:
    """a non-empty name without / + # $ or spaces."""
    if not value or any(c in value for c in "/+#$ "):
        return gettext("must be a non-empty name without %(signs)s or spaces, got %(value)s",
                       signs="/ + # $", value=repr(value))
    return None


@dataclass
class MqttConfig:
    """The hospital's MQTT broker (TLS with a client certificate)."""

    host: str = setting(doc="broker host name (must match its certificate)", default="127.0.0.1")
    port: int = setting(in_range(1, 65535), "broker TLS port", 8883)
    ca_file: str = setting(doc="CA bundle that signed the broker's certificate; empty uses the "
                               "system's", default="")
    cert_file: str = setting(doc="this receiver's client certificate (PEM)", default="")
    key_file: str = setting(doc="this receiver's client private key (PEM)", default="")
    group: str = setting(_group, "shared-subscription group: receivers in one group share the load",
                         "clinibox-central")
    client_id: str = setting(doc="MQTT client id, also the name of the session the broker keeps "
                                 "(with the messages sent while the receiver is down); it must "
                                 "stay the same across restarts and differ between receivers; "
                                 "empty means central-<hostname>", default="")
    keepalive: int = setting(in_range(5, 3600), "seconds between keep-alive pings", 30)
    session_expiry: int = setting(in_range(0, 4_294_967_295),
                                  "seconds the broker keeps the session while disconnected",
                                  7 * 86400)

    def resolved_client_id(self) -> str:
        """The client id to connect with: the configured one, or ``central-<hostname>``.

        The default is stable across restarts on purpose: a per-process id
        would leave the old session, subscribed to the shared group, holding
        its queued messages (and, with Mosquitto, a share of new ones) until it
        expires. Run a second receiver on the same host with its own id.
        """
        return self.client_id or f"central-{socket.gethostname()}"


@dataclass
class DatabaseConfig:
    """Where the receiver keeps devices, messages, alerts and rejections."""

    url: str = setting(_database_url, "sqlite:///PATH (or a bare path) or "
                       "postgresql://USER@HOST:PORT/DB", "sqlite:///central.db")


@dataclass
class KeysConfig:
    """The hospital's own key."""

    hospital_key: str = setting(doc="X25519 private key (PEM) the boxes encrypt to", default="")
    hospital_signing_key: str = setting(
        doc="Ed25519 private key (PEM) that signs the verdicts and rollout offers sent down to "
            "the boxes (clinibox keys generate --kind hospital-signing); empty: nothing is sent "
            "down", default="")


@dataclass
class HealthConfig:
    """When the report calls a device silent or warns about it."""

    stale_seconds: int = setting(in_range(10, 31_536_000),
                                 "a device is silent after this long without a message", 900)
    drift_psi: float = setting(in_range(0.001, 10.0),
                               "warn when a histogram's population stability index exceeds this",
                               0.25)
    baseline_summaries: int = setting(in_range(1, 10_000),
                                      "first summaries of a model that form its baseline", 24)
    recent_summaries: int = setting(in_range(1, 10_000),
                                    "latest summaries compared with the baseline", 24)
    disk_warn_pct: float = setting(in_range(0.0, 100.0),
                                   "warn when the box's disk is this full", 90.0)
    queue_warn: int = setting(in_range(1, 2**31),
                              "warn when this many objects wait on the box", 500)
    event_warn_hours: float = setting(in_range(0.0, 8760.0),
                                      "warn this long after a box rolled back or refused a model "
                                      "package, or a service on it failed", 72.0)
    disagree_warn: float = setting(in_range(0.0, 1.0),
                                   "warn when clinicians disagree with this share of findings", 0.2)


@dataclass
class ReceiverConfig:
    """What the receiver accepts."""

    max_message_age_days: float = setting(
        in_range(1.0, 3650.0), "refuse (and count) messages created longer ago than this; longer "
                             "than a box may stay offline with its outbox full (90 days)", 90.0)
    keep_dead_letters: bool = setting(
        doc="keep the bytes of every refused message in the dead_letters table (clinibox "
            "central dead-letters shows them)", default=True)
    dead_letter_max_mb: int = setting(
        in_range(1, 1_000_000), "the most the dead_letters table holds; the oldest are dropped "
                                "beyond it", 64)
    flood_messages: int = setting(
        in_range(1, 10_000_000), "a box with more messages than this waiting in the receiver's "
                                 "intake (held beyond its share) is marked flooding on the fleet "
                                 "page", 200)


def _url(value: Any) -> str | None:
    """empty, or an http:// or https:// URL."""
    if value and not value.startswith(("http://", "https://")):
        return gettext("must be empty or an %(http)s or %(https)s URL, got %(value)s",
                       http="http://", https="https://", value=repr(value))
    return None


@dataclass
class WebConfig:
    """The hospital's console (``clinibox central web``)."""

    host: str = setting(doc="address the console listens on", default="0.0.0.0")
    port: int = setting(in_range(1, 65535), "HTTPS port of the console", 8443)
    tls_cert: str = setting(doc="the console's TLS certificate (PEM); empty: a self-signed one "
                                "is made in state_dir", default="")
    tls_key: str = setting(doc="the console's TLS private key (PEM), with tls_cert", default="")
    state_dir: str = setting(doc="folder of the console's own files (self-signed certificate, "
                                 "secrets)", default="central-web")
    threads: int = setting(in_range(1, 256), "worker threads serving requests", 8)
    language: str = setting(one_of("", "zh_CN", "en"),
                            "the console's language: zh_CN, en, or empty for the browser's", "")
    public_url: str = setting(_url, "the console's address as people reach it (links in the "
                                    "webhook's messages); empty: no link", "")
    session_idle_minutes: int = setting(in_range(1, 1440),
                                        "a session ends after this long unused", 30)
    session_max_hours: int = setting(in_range(1, 168),
                                     "a session ends this long after the login", 12)
    login_free_failures: int = setting(in_range(1, 1000),
                                       "failed logins to one account before each next one waits",
                                       5)
    login_free_failures_per_address: int = setting(
        in_range(1, 100_000), "failed logins from one address before each next one waits", 20)
    login_max_delay_seconds: int = setting(in_range(1, 86_400),
                                           "the longest wait after failed logins", 300)


@dataclass
class AlertsConfig:
    """How the console treats waiting alerts."""

    escalate_minutes: int = setting(in_range(1, 525_600),
                                    "an alert waiting longer than this is marked", 60)


@dataclass
class NotifyConfig:
    """The webhook fired on every new alert (a hospital's own messenger)."""

    url: str = setting(_url, "URL the alert is POSTed to as JSON (with format = \"fhir\": "
                       "the FHIR server's base, POSTed <url>/Communication and "
                       "<url>/DiagnosticReport); empty: no webhook", "")
    format: str = setting(one_of("json", "fhir"), 'the body: "json" (each new alert, '
                          "clinibox's JSON) or \"fhir\" (each new alert as a FHIR R4 "
                          "Communication and each verdict as a DiagnosticReport, naming the "
                          "study by its keyed reference only)", "json")
    secret_file: str = setting(doc="file holding the shared secret the body is signed with "
                                   "(HMAC-SHA256); required with url", default="")
    timeout_seconds: float = setting(in_range(1.0, 300.0), "seconds one delivery may take", 10.0)
    max_attempts: int = setting(in_range(1, 1000), "attempts before a delivery is given up", 12)
    retry_min_seconds: float = setting(in_range(0.1, 86_400.0),
                                       "wait before the first retry (doubled each time)", 5.0)
    retry_max_seconds: float = setting(in_range(1.0, 604_800.0),
                                       "the longest wait between retries", 3600.0)


@dataclass
class DownlinkConfig:
    """The verdicts sent down to the boxes."""

    resend_minutes: float = setting(
        in_range(1.0, 100_000.0), "a verdict the box has not acknowledged (its heartbeat's "
                                  "downlink_seq) is published again after this, then after "
                                  "twice as long each time, up to a day", 30.0)


@dataclass
class RolloutsConfig:
    """Model packages rolled out to the boxes (``clinibox central rollout``)."""

    trusted_keys: list[str] = setting(
        doc="Ed25519 public keys (PEM) of the hospital's model signing: a rollout offers only "
            "a package signed by one of them (the keys the enrolment bundles carry)",
        factory=list)
    chunk_kib: int = setting(in_range(4, 8192), "size of the chunks a package is sent in "
                                                "(KiB; raised for a package of more than 256)",
                             64)
    canary: int = setting(in_range(*CANARY_RANGE), "boxes offered a rollout first; the rest "
                                                   "wait until each of them has installed it", 1)
    wave_size: int = setting(in_range(*WAVE_SIZE_RANGE),
                             "boxes offered at once after the canaries", 10)
    box_timeout_hours: float = setting(in_range(0.01, 8760),
                                       "hours a box may take from its offer to installing or "
                                       "refusing the package; after that it counts as failed "
                                       "(timed out) and no longer holds the next wave back", 72.0)
    packages_dir: str = setting(doc="folder of signed package archives (*.tar.gz) and "
                                    "software releases (*.release) the console offers to "
                                    "start a rollout from; empty: none (the terminal command "
                                    "only)", default="")


@dataclass
class CentralConfig:
    """The whole configuration of one hospital receiver."""

    receiver: ReceiverConfig = field(default_factory=ReceiverConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    web: WebConfig = field(default_factory=WebConfig)
    rollouts: RolloutsConfig = field(default_factory=RolloutsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    downlink: DownlinkConfig = field(default_factory=DownlinkConfig)


def database_kind(url: str) -> str:
    """``"postgresql"`` or ``"sqlite"`` for a database URL (a bare path is SQLite)."""
    return "postgresql" if url.startswith(_POSTGRES_PREFIXES) else "sqlite"


def from_dict(data: dict[str, Any]) -> CentralConfig:
    """A validated CentralConfig from parsed TOML; raise ConfigError naming the key."""
    config = load_sections(data, CentralConfig)
    mqtt = config.mqtt
    if bool(mqtt.cert_file) != bool(mqtt.key_file):
        raise ConfigError(gettext("[mqtt] cert_file: a client certificate needs both cert_file "
                                  "and key_file"))
    if config.notify.url and not config.notify.secret_file:
        raise ConfigError(gettext("[notify] secret_file: the webhook's shared secret is "
                                  "required when [notify] url is set"))
    if bool(config.web.tls_cert) != bool(config.web.tls_key):
        raise ConfigError(gettext("[web] tls_cert: a certificate needs both tls_cert and "
                                  "tls_key"))
    if config.notify.retry_max_seconds < config.notify.retry_min_seconds:
        raise ConfigError(gettext("[notify] retry_max_seconds: must not be below "
                                  "retry_min_seconds"))
    if config.notify.format == "fhir" and not installed("fhir.resources"):
        raise ConfigError(gettext(
            '[notify] format: "fhir" needs the Python package fhir.resources, which is not '
            "installed here; install clinibox[central]"))
    return config



def load(path: str | Path | None = None) -> CentralConfig:
    """Load the config file at ``path`` (or the embedded defaults when None)."""
    if path is None:
        return CentralConfig()
    return from_dict(read_toml(path))


def describe_defaults() -> str:
    """The embedded defaults as a commented TOML example."""
    return describe_sections(
        CentralConfig(), "# clinibox central: every key is optional; shown with its default.")
