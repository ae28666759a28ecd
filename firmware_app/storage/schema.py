"""The box database's whole schema, for a fresh database and after every upgrade.

``db.initialise`` runs it on a fresh database (then sets ``user_version`` to
``migrations.SCHEMA_VERSION``) and after the migrations of an older one: every
statement is ``CREATE … IF NOT EXISTS`` (or ``INSERT OR IGNORE``), so it only
adds what is missing. When you change it, add the migration that takes a
database of the previous version to it (``firmware_app/storage/migrations/``,
``docs/development/migration.md``); the migration tests check that an upgraded
database and a fresh one end the same.
"""

from __future__ import annotations

from firmware_app.storage.audit_schema import AUDIT_SCHEMA
from firmware_app.storage.study_alerts import ALERTED_STUDIES_TABLE

#: every table, index and trigger of the current schema (idempotent)
SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id                  INTEGER PRIMARY KEY,
    local_id            TEXT NOT NULL UNIQUE,
    sop_instance_uid    TEXT UNIQUE,
    study_instance_uid  TEXT,
    series_instance_uid TEXT,
    modality            TEXT,
    source              TEXT NOT NULL,
    origin              TEXT,
    spool_path          TEXT NOT NULL,
    size_bytes          INTEGER NOT NULL,
    status              TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    reason              TEXT,
    duplicates          INTEGER NOT NULL DEFAULT 0,
    received_at         REAL NOT NULL,
    updated_at          REAL NOT NULL,
    image_deleted_at    REAL,
    image_rows          INTEGER,
    image_columns       INTEGER,
    geometry_json       TEXT
);
CREATE INDEX IF NOT EXISTS instances_status ON instances(status, id);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_instance_uid);
CREATE INDEX IF NOT EXISTS instances_received ON instances(received_at);
-- Retention (firmware_app/storage/retention.py): ``image_deleted_at`` is NULL while the
-- object's file is on the box; once retention deletes it, the time it did (the
-- row, its result and its study stay), with the image's size in pixels kept in
-- ``image_rows``/``image_columns`` so the viewer can still place the findings in
-- words. The partial indexes hold only the images still present, oldest first
-- (what a retention pass walks), and only the deleted ones, by date.
CREATE INDEX IF NOT EXISTS instances_image_present ON instances(received_at)
    WHERE image_deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS instances_image_deleted ON instances(image_deleted_at)
    WHERE image_deleted_at IS NOT NULL;
-- ``geometry_json`` (v12): where the analysed image lies in the patient (Image Position and
-- Orientation (Patient), Pixel Spacing, Slice Thickness, Spacing Between Slices, Frame of
-- Reference UID, frames: ``DecodedImage.geometry()``); NULL when not recorded (analysed
-- before v12). A series' slices are read as a volume from it (storage/volumes.py).

-- A result's ``assessment`` (inference/assessment.py: finding, no_finding, not_assessable,
-- outside_validated_range) with its reason in words, its lesion records
-- (inference/lesions.py) and every class probability of a classifier.
CREATE TABLE IF NOT EXISTS results (
    instance_id     INTEGER PRIMARY KEY REFERENCES instances(id),
    model_id        TEXT NOT NULL,
    backend         TEXT NOT NULL,
    probability     REAL NOT NULL,
    finding         INTEGER NOT NULL,
    alert           INTEGER NOT NULL,
    findings_json   TEXT NOT NULL,
    warnings_json   TEXT NOT NULL,
    key_frame       INTEGER NOT NULL,
    frames_inferred INTEGER NOT NULL,
    heatmap         BLOB,
    heatmap_shape   TEXT,
    timings_json    TEXT NOT NULL,
    created_at      REAL NOT NULL,
    input_mean      REAL,
    input_std       REAL,
    assessment      TEXT NOT NULL DEFAULT 'no_finding',
    assessment_reason TEXT NOT NULL DEFAULT '',
    lesions_json    TEXT NOT NULL DEFAULT '[]',
    classes_json    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS results_created ON results(created_at);

-- One row per study with at least one processed instance: the worklist.
-- The id is stable (rows are updated in place), so the viewer links to it.
-- The patient and study strings are shown on the clinic LAN only; they never
-- leave the box (the telemetry schema has no field that could carry them).
-- ``completed_at``: its latest completion (stable: storage/study_completion.py);
-- ``alerts_done_at``: the completion whose alerts are all queued (storage/study_alerts.py).
CREATE TABLE IF NOT EXISTS studies (
    id                 INTEGER PRIMARY KEY,
    study_key          TEXT NOT NULL UNIQUE,
    modality           TEXT,
    instances          INTEGER NOT NULL,
    max_probability    REAL NOT NULL,
    findings           INTEGER NOT NULL,
    alert              INTEGER NOT NULL,
    top_instance_id    INTEGER REFERENCES instances(id),
    warnings           INTEGER NOT NULL,
    received_at        REAL NOT NULL,
    updated_at         REAL NOT NULL,
    patient_name       TEXT NOT NULL DEFAULT '',
    patient_id         TEXT NOT NULL DEFAULT '',
    study_date         TEXT NOT NULL DEFAULT '',
    study_description  TEXT NOT NULL DEFAULT '',
    not_assessable     INTEGER NOT NULL DEFAULT 0,
    outside_range      INTEGER NOT NULL DEFAULT 0,
    completed_at       REAL,
    completions        INTEGER NOT NULL DEFAULT 0,
    alerts_done_at     REAL,
    band               INTEGER NOT NULL DEFAULT 3,
    suspicion          REAL
);
-- ``max_probability`` is the model's highest answer, shown to nobody (kept for the record);
-- ``suspicion`` the highest of the images it gave a result for (NULL: none), and ``band``
-- the clinical order (inference/assessment.py: alert, finding, a doctor must read, none)
CREATE INDEX IF NOT EXISTS studies_clinical_order ON studies(band, suspicion DESC,
                                                            received_at DESC);
CREATE INDEX IF NOT EXISTS studies_received ON studies(received_at);
-- the previous study of the same patient (the study page); made on any older database too
CREATE INDEX IF NOT EXISTS studies_patient ON studies(patient_id, study_date, received_at);

CREATE TABLE IF NOT EXISTS imported_files (
    medium_path  TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    instance_id  INTEGER,
    imported_at  REAL NOT NULL,
    PRIMARY KEY (medium_path, size_bytes, mtime_ns)
);

-- Clinicians' verdicts on findings: ``finding`` indexes the result's boxes,
-- -1 is the image as a whole. One verdict per clinician and finding (the
-- latest wins); telemetry sends only the counts.
CREATE TABLE IF NOT EXISTS feedback (
    id          INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    finding     INTEGER NOT NULL DEFAULT -1,
    verdict     TEXT NOT NULL CHECK (verdict IN ('agree', 'disagree', 'unsure')),
    account_id  INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    at          REAL NOT NULL,
    UNIQUE (instance_id, finding, account_id)
);
CREATE INDEX IF NOT EXISTS feedback_at ON feedback(at);

-- The viewer's local accounts (``clinibox user``), their sessions and failed logins.
CREATE TABLE IF NOT EXISTS accounts (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('clinician', 'technician')),
    password_hash TEXT NOT NULL,
    created_at    REAL NOT NULL,
    changed_at    REAL NOT NULL,
    language      TEXT NOT NULL DEFAULT ''  -- the viewer's language chosen by the user ('' none)
);
CREATE TABLE IF NOT EXISTS web_sessions (
    token_hash  TEXT PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at  REAL NOT NULL,
    last_seen   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    id       INTEGER PRIMARY KEY,
    at       REAL NOT NULL,
    name     TEXT NOT NULL,
    address  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_at ON login_failures(at);

-- Outbound telemetry. seq is the message's sequence number: AUTOINCREMENT
-- never reuses a value, even after rows are deleted, so it only grows across
-- restarts and power cuts. payload is the exact JSON handed to encryption
-- (kept for the privacy audit); envelope is the sealed bytes, made once so
-- that a resend is byte-identical.
CREATE TABLE IF NOT EXISTS outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dropped', 'superseded', 'will')),
    envelope    BLOB,
    created_at  REAL NOT NULL,
    sent_at     REAL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, priority, seq);

-- Alerts sent (one per study and model name: storage/study_alerts.py) and telemetry counters.
{alerted_studies};
CREATE TABLE IF NOT EXISTS telemetry_state (
    name   TEXT PRIMARY KEY,
    value  REAL NOT NULL
);

-- One row per retention pass; a row left without ``finished_at`` is a pass that
-- crashed, whose marked images the next pass deletes again (files may remain).
CREATE TABLE IF NOT EXISTS retention_passes (
    id          INTEGER PRIMARY KEY,
    started_at  REAL NOT NULL,
    finished_at REAL,
    images      INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0
);

-- DICOM results (SR, SEG, key image) for the clinic's PACS destinations: one row per
-- document and destination. The document's file is written durably before its row
-- commits; the row is ``sent`` only after the destination answered the C-STORE with
-- Success, so a restart or a power cut loses nothing and sends nothing twice that was
-- acknowledged. ``superseded``: a newer version of the same document replaced it
-- before it was sent. ``held``: the destination refused it ([pacs] max_refusals
-- times, ``refusals``) with a failure status (``last_status``); it waits for a
-- technician (``clinibox dicom-out retry``). ``kind`` is one of ``dicom_output_kinds``
-- (below).
CREATE TABLE IF NOT EXISTS dicom_outbox (
    id               INTEGER PRIMARY KEY,
    destination      TEXT NOT NULL,
    kind             TEXT NOT NULL,
    study_key        TEXT NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    path             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'superseded', 'held')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    sent_at          REAL,
    refusals         INTEGER NOT NULL DEFAULT 0,
    last_status      INTEGER,
    UNIQUE (destination, sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS dicom_outbox_pending ON dicom_outbox(state, next_attempt_at, id);

-- The kinds a dicom_outbox row may have: the keys of the table of DICOM outputs
-- (``contracts/dicom_outputs.py``), written by ``initialise`` whenever the database
-- opens (``dicom_outbox.kind_rule``); the triggers refuse any other kind. A CHECK could
-- not grow with the table without ``dicom_outbox`` being made anew (v15).
CREATE TABLE IF NOT EXISTS dicom_output_kinds (
    kind TEXT PRIMARY KEY
);
CREATE TRIGGER IF NOT EXISTS dicom_outbox_kind_insert BEFORE INSERT ON dicom_outbox
WHEN NEW.kind NOT IN (SELECT kind FROM dicom_output_kinds)
BEGIN
    SELECT RAISE(ABORT, 'dicom_outbox.kind is not a DICOM output of this software');
END;
CREATE TRIGGER IF NOT EXISTS dicom_outbox_kind_update BEFORE UPDATE OF kind ON dicom_outbox
WHEN NEW.kind NOT IN (SELECT kind FROM dicom_output_kinds)
BEGIN
    SELECT RAISE(ABORT, 'dicom_outbox.kind is not a DICOM output of this software');
END;

-- Every de-identified export of a study (who, when, from where, which study, how many files).
CREATE TABLE IF NOT EXISTS exports (
    id         INTEGER PRIMARY KEY,
    at         REAL NOT NULL,
    account    TEXT NOT NULL,
    address    TEXT NOT NULL DEFAULT '',
    study_key  TEXT NOT NULL,
    files      INTEGER NOT NULL,
    target     TEXT NOT NULL
);

-- The technician's event log (the last 1000): ``message`` in words for people, ``code`` (v16)
-- what a program counts it by ('' for an event nobody counts).
CREATE TABLE IF NOT EXISTS events (
    id        INTEGER PRIMARY KEY,
    at        REAL NOT NULL,
    level     TEXT NOT NULL,
    component TEXT NOT NULL,
    message   TEXT NOT NULL,
    code      TEXT NOT NULL DEFAULT ''
);

-- The hospital's verdicts on the box's alerts, received over the downlink (v17): ``seq`` the
-- hospital's downlink sequence number for this box (each kept once), ``study_key`` the study
-- its keyed reference ``study_ref`` names (NULL when no study on the box has it),
-- ``alert_seq`` the box's alert message reviewed; the highest ``seq`` of a study is its
-- current verdict (a later review amends an earlier one); ``late`` 1 when it arrived after
-- the downlink's freshness window (kept all the same). Times are epoch seconds.
CREATE TABLE IF NOT EXISTS hospital_reviews (
    seq               INTEGER PRIMARY KEY,
    study_key         TEXT,
    study_ref         TEXT NOT NULL,
    alert_seq         INTEGER NOT NULL,
    verdict           TEXT NOT NULL,
    follow_up_months  INTEGER,
    note              TEXT NOT NULL DEFAULT '',
    reviewed_at       REAL NOT NULL,
    received_at       REAL NOT NULL,
    late              INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS hospital_reviews_study ON hospital_reviews(study_key, seq);

-- The hospital's rollout offers and rollback orders (v18, storage/model_offers.py): ``seq``
-- the downlink's sequence number (kept once, counted in the watermark with the verdicts'),
-- ``kind`` 'rollout' or 'rollback', ``payload`` the checked offer as JSON, ``step`` where
-- the box stands (contracts.egress.ROLLOUT_STEPS), ``reason`` why it stopped, ``done`` 1 once
-- nothing more is to be done for it, ``reported`` 0 while the hospital has not been told that
-- the order was closed without the updater (refused on arrival, replaced by a newer one).
CREATE TABLE IF NOT EXISTS model_offers (
    seq          INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    rollout      INTEGER NOT NULL,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    step         TEXT NOT NULL,
    reason       TEXT NOT NULL DEFAULT '',
    received_at  REAL NOT NULL,
    updated_at   REAL NOT NULL,
    done         INTEGER NOT NULL DEFAULT 0,
    reported     INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS model_offers_open ON model_offers(done, seq);

-- One row while the box runs no model it may run (v18): why (a contracts.egress reason
-- code: not_installed, signature …), the refusal in words, and since when.
CREATE TABLE IF NOT EXISTS model_waiting (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    reason  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '',
    since   REAL NOT NULL
);

-- Bedside live sessions (v19): one open session per live source at most (``ended_at``
-- NULL), a sonographer's requests to it (``kind``: a contracts.statuses.LiveRequest word;
-- ``seq`` the frame shown when a frame was asked for, NULL: the newest; ``outcome`` what the
-- live process did), and what each session kept: key frames and clips
-- (``kind``: a LiveKept word) landed in the spool as instance ``instance_id``
-- (storage/live_sessions.py).
CREATE TABLE IF NOT EXISTS live_sessions (
    id            INTEGER PRIMARY KEY,
    source        TEXT NOT NULL,
    study_uid     TEXT NOT NULL,
    series_uid    TEXT NOT NULL,
    patient_name  TEXT NOT NULL DEFAULT '',
    patient_id    TEXT NOT NULL DEFAULT '',
    birth_date    TEXT NOT NULL DEFAULT '',
    sex           TEXT NOT NULL DEFAULT '',
    from_study    TEXT NOT NULL DEFAULT '',
    started_by    TEXT NOT NULL,
    started_at    REAL NOT NULL,
    ended_at      REAL,
    accession_number TEXT NOT NULL DEFAULT '',
    sps_id        TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS live_sessions_open ON live_sessions(source)
    WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS live_requests (
    id            INTEGER PRIMARY KEY,
    session       INTEGER NOT NULL REFERENCES live_sessions(id),
    kind          TEXT NOT NULL,
    seq           INTEGER,
    requested_by  TEXT NOT NULL,
    requested_at  REAL NOT NULL,
    done_at       REAL,
    outcome       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS live_requests_open ON live_requests(session, done_at);
CREATE TABLE IF NOT EXISTS live_kept (
    id            INTEGER PRIMARY KEY,
    session       INTEGER NOT NULL REFERENCES live_sessions(id),
    kind          TEXT NOT NULL,
    instance_id   INTEGER NOT NULL,
    sop_uid       TEXT NOT NULL,
    frames        INTEGER NOT NULL,
    score         REAL,
    kept_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS live_kept_session ON live_kept(session);

-- The hospital's tests of the link (v20, storage/link_checks.py): each ``link_check``
-- downlink kept by its sequence number, counted in the downlink watermark.
CREATE TABLE IF NOT EXISTS link_checks (
    seq          INTEGER PRIMARY KEY,
    created_at   REAL NOT NULL,
    received_at  REAL NOT NULL
);

-- The hospital's time (v22, storage/hospital_clock.py): each ``clock`` downlink kept by its
-- sequence number, counted in the downlink watermark; ``received_at`` by the box's clock
-- when it arrived (behind ``created_at`` when the box's clock was behind).
CREATE TABLE IF NOT EXISTS hospital_clock (
    seq          INTEGER PRIMARY KEY,
    created_at   REAL NOT NULL,
    received_at  REAL NOT NULL
);

-- The box's own copy of each study's result documents (v23, storage/kept_documents.py),
-- for its DICOMweb service (``[dicomweb]``): the latest completion's SR, SEG and key image
-- of each study, written under <state>/documents; a completion replaces the one before,
-- and retention forgets them with the study's last image.
CREATE TABLE IF NOT EXISTS kept_documents (
    sop_instance_uid    TEXT PRIMARY KEY,
    study_key           TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    kind                TEXT NOT NULL,
    modality            TEXT NOT NULL,
    path                TEXT NOT NULL,
    created_at          REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS kept_documents_study ON kept_documents(study_key);

-- Each study's report for the clinic's information systems (v24,
-- storage/records_outbox.py): one row per report and receiver, its content as JSON; the HL7
-- v2 or FHIR message is made from it at each try.
CREATE TABLE IF NOT EXISTS records_outbox (
    id               INTEGER PRIMARY KEY,
    receiver         TEXT NOT NULL,
    study_key        TEXT NOT NULL,
    report_kind      TEXT NOT NULL CHECK (report_kind IN ('result', 'verdict')),
    version          INTEGER NOT NULL,
    content          TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'superseded', 'held')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    refusals         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT,
    last_status      TEXT,
    created_at       REAL NOT NULL,
    sent_at          REAL,
    UNIQUE (receiver, study_key, report_kind, version)
);
CREATE INDEX IF NOT EXISTS records_outbox_pending ON records_outbox(receiver, state,
                                                                    next_attempt_at);

-- The patient's earlier studies asked of the PACS (v25, storage/priors.py): one lookup per
-- study with a finding (``state``: a PriorLookupState word, ``reason`` a code), and each
-- earlier study fetched for one (never sent anywhere: it is there to be compared with).
CREATE TABLE IF NOT EXISTS prior_lookups (
    study_key   TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('asking', 'fetched', 'none', 'failed')),
    reason      TEXT NOT NULL DEFAULT '',
    asked_at    REAL NOT NULL,
    ended_at    REAL,
    studies     INTEGER NOT NULL DEFAULT 0,
    images      INTEGER NOT NULL DEFAULT 0,
    instance_ids TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS prior_studies (
    study_key      TEXT PRIMARY KEY,
    for_study_key  TEXT NOT NULL,
    study_date     TEXT NOT NULL DEFAULT '',
    fetched_at     REAL NOT NULL
);

-- The clinic's own finding threshold (v26, storage/clinic_thresholds.py): for each model and
-- runtime (``backend``, as results record it), the threshold the box set from its confirmed
-- cases, the package's, and how it was chosen (``state``: a ThresholdState word).
CREATE TABLE IF NOT EXISTS clinic_thresholds (
    model_id           TEXT NOT NULL,
    backend            TEXT NOT NULL,
    finding            REAL NOT NULL,
    package_finding    REAL NOT NULL,
    state              TEXT NOT NULL,
    target_sensitivity REAL NOT NULL,
    lesions            INTEGER NOT NULL,
    clear              INTEGER NOT NULL,
    sensitivity        REAL,
    specificity        REAL,
    computed_at        REAL NOT NULL,
    PRIMARY KEY (model_id, backend)
);

-- The clinic's Modality Worklist (v21, storage/worklist.py): today's scheduled procedure
-- steps as the poller last fetched them (replaced whole at each answer; ids never reused,
-- so a pick from an older page never names another patient), and one row of
-- where the worklist stands (``state``: a WorklistState word; ``reason`` a code).
CREATE TABLE IF NOT EXISTS worklist_items (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_name      TEXT NOT NULL DEFAULT '',
    patient_id        TEXT NOT NULL DEFAULT '',
    birth_date        TEXT NOT NULL DEFAULT '',
    sex               TEXT NOT NULL DEFAULT '',
    accession_number  TEXT NOT NULL DEFAULT '',
    sps_id            TEXT NOT NULL DEFAULT '',
    modality          TEXT NOT NULL DEFAULT '',
    station_ae        TEXT NOT NULL DEFAULT '',
    scheduled_date    TEXT NOT NULL DEFAULT '',
    scheduled_time    TEXT NOT NULL DEFAULT '',
    description       TEXT NOT NULL DEFAULT '',
    fetched_at        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS worklist_state (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    state             TEXT NOT NULL,
    reason            TEXT NOT NULL DEFAULT '',
    items             INTEGER NOT NULL DEFAULT 0,
    checked_at        REAL NOT NULL,
    answered_at       REAL
);

-- The access audit trail (v9): append-only rows in a hash chain, its anchor, the triggers
-- that refuse changes (storage/audit_schema.py, storage/audit.py).
""".replace("{alerted_studies}", ALERTED_STUDIES_TABLE.strip()) + AUDIT_SCHEMA
