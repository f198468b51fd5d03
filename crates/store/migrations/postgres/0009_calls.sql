-- The call-centre channel: one row per (tenant, platform call id), its merged state and where
-- its CRM log stands. `version` counts the changes a log shows; the log job records the
-- version it wrote (`logged_version`), so a change that lands while the job runs is never lost:
-- the job sees the newer version when it finishes and schedules another run.
CREATE TABLE calls (
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    call_id        TEXT NOT NULL,
    connection_id  TEXT REFERENCES connections(id) ON DELETE SET NULL,
    phase          TEXT NOT NULL,
    facts          TEXT NOT NULL,
    screen_pop     TEXT,
    contact_id     TEXT,
    record_id      TEXT,
    logged_stage   TEXT,
    version        BIGINT NOT NULL,
    logged_version BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, call_id)
);
CREATE INDEX calls_tenant_updated ON calls (tenant_id, updated_at);

-- Every accepted event, with what it did (applied, duplicate, stale), for operators.
CREATE TABLE call_events (
    id BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    effect      TEXT NOT NULL,
    body        TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    FOREIGN KEY (tenant_id, call_id) REFERENCES calls (tenant_id, call_id) ON DELETE CASCADE
);
CREATE INDEX call_events_call ON call_events (tenant_id, call_id, id);

-- Text messages to keep as notes: one row per (tenant, platform message id), so a repeated
-- event makes no second note.
CREATE TABLE sms_messages (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    message_id    TEXT NOT NULL,
    connection_id TEXT REFERENCES connections(id) ON DELETE SET NULL,
    message       TEXT NOT NULL,
    contact_id    TEXT,
    note_id       TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, message_id)
);
CREATE INDEX sms_messages_tenant_updated ON sms_messages (tenant_id, updated_at);

-- A dedupe key names one unit of work: besides at most one pending job per key, a pending job
-- is not claimed while one of its key runs (one log job per call at a time). This index
-- answers that check.
CREATE INDEX jobs_running_key ON jobs (tenant_id, kind, dedupe_key) WHERE status = 'running' AND dedupe_key IS NOT NULL;
