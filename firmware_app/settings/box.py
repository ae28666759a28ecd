"""One validated configuration for the box, read from TOML.

Every field has a default that serves a single box, so the service starts with
no file at all (``clinibox serve``). A file only needs the keys it changes.
Unknown sections or keys and bad values are refused with a message that names
the key, e.g. ``[dicom] port: must be between 1 and 65535, got 0``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinibox_common.bundled import BUNDLED_MODELS_DIR, DEMO_KEY_NAME, DEMO_PUBLIC_KEY
from clinibox_common.settings_loader import (
    describe_sections,
    load_sections,
    read_toml,
)
from engine.settings import LimitsConfig, RuntimeConfig
from firmware_app.settings.audit import AuditConfig
from firmware_app.settings.checks import check_cross_field, load_tables
from firmware_app.settings.dicom import DicomConfig
from firmware_app.settings.dicomweb import DicomwebConfig
from firmware_app.settings.learning import LearningConfig, check_learning
from firmware_app.settings.live import (
    SOURCES_DOC,
    LiveConfig,
    LiveSource,
    check_sources,
    describe_source_example,
)
from firmware_app.settings.log import LoggingConfig
from firmware_app.settings.models import ModelsConfig, is_demo_key
from firmware_app.settings.mqtt import MqttConfig
from firmware_app.settings.pacs import (
    DESTINATIONS_DOC,
    PacsConfig,
    describe_destination_example,
    load_destinations,
)
from firmware_app.settings.priors import PriorsConfig, check_priors
from firmware_app.settings.records import (
    RECEIVERS_DOC,
    RecordsConfig,
    check_records,
    describe_receiver_example,
    load_receivers,
)
from firmware_app.settings.retention import RetentionConfig
from firmware_app.settings.routing import (
    RULES_DOC,
    RoutingConfig,
    describe_rule_example,
    load_rules,
)
from firmware_app.settings.storage import StorageConfig
from firmware_app.settings.studies import StudiesConfig
from firmware_app.settings.telemetry import TelemetryConfig
from firmware_app.settings.updates import UpdatesConfig
from firmware_app.settings.usb import UsbConfig
from firmware_app.settings.web import WebConfig
from firmware_app.settings.worker import WorkerConfig
from firmware_app.settings.worklist import WorklistConfig, check_worklist


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
    worklist: WorklistConfig = field(default_factory=WorklistConfig)
    dicomweb: DicomwebConfig = field(default_factory=DicomwebConfig)
    records: RecordsConfig = field(default_factory=RecordsConfig)
    priors: PriorsConfig = field(default_factory=PriorsConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)

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
    def software_incoming_dir(self) -> Path:
        """Where the service leaves a software release the hospital rolled out, for root's
        updater (``clinibox-software-update.path`` watches it)."""
        return self.state_dir / "software-incoming"

    @property
    def clock_incoming_dir(self) -> Path:
        """Where the service leaves a hospital's downlink whose signed time is ahead of the
        box's clock, for the clock's helper (``clinibox-clock.path`` watches it)."""
        return self.state_dir / "clock-incoming"

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
    def kept_documents_dir(self) -> Path:
        """Where the box keeps its own copy of each study's result documents (``[dicomweb]``)."""
        return self.state_dir / "documents"

    @property
    def pacs_calling_ae_title(self) -> str:
        """The AE title the box calls the PACS with: ``[pacs] calling_ae_title`` or its own."""
        return self.pacs.calling_ae_title or self.dicom.ae_title

    @property
    def worklist_calling_ae_title(self) -> str:
        """The AE title the box asks the worklist as: ``[worklist] station_ae_title`` or its
        own."""
        return self.worklist.station_ae_title or self.dicom.ae_title

    @property
    def trusts_demo_key(self) -> bool:
        """Whether packages signed with the public DEMO-ONLY key would run here."""
        return self.models.trust_demo_key


def from_dict(data: dict[str, Any]) -> Config:
    """Build a validated Config from parsed TOML; raise ConfigError naming the key."""
    data = dict(data)
    tables: dict[tuple[str, str], Any] = {}
    for section, key in (("pacs", "destinations"), ("routing", "rules"), ("live", "sources"),
                         ("records", "receivers")):
        values = data.get(section)
        if isinstance(values, dict) and key in values:
            values = dict(values)
            tables[(section, key)] = values.pop(key)
            data[section] = values
    config = load_sections(data, Config)
    config.pacs.destinations = load_destinations(tables.get(("pacs", "destinations"), []))
    config.routing.rules = load_rules(tables.get(("routing", "rules"), []))
    config.live.sources = load_tables(tables.get(("live", "sources"), []), LiveSource,
                                       "live.sources", ("name", "url"))
    check_sources(config.live.sources)
    check_worklist(config.worklist)
    check_priors(config.priors)
    check_learning(config.learning)
    config.records.receivers = load_receivers(tables.get(("records", "receivers"), []))
    check_records(config.records)
    check_cross_field(config)
    return config


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
    for doc, key in ((DESTINATIONS_DOC, "destinations"), (RULES_DOC, "rules"),
                     (SOURCES_DOC, "sources"), (RECEIVERS_DOC, "receivers")):
        entry = f"# {doc}\n{key} = []\n"
        assert entry in text, f"describe_sections renders {key} as documented"
        text = text.replace(entry, "", 1)
    return (text + "\n" + describe_destination_example() + "\n\n" + describe_rule_example()
            + "\n\n" + describe_receiver_example() + "\n\n" + describe_source_example())
