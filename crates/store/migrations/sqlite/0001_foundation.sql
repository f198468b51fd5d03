-- crmhub foundation schema (SQLite). Times are Unix milliseconds; ids are UUID text.

CREATE TABLE installation_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    id           TEXT PRIMARY KEY,
    slug         TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    phone_region TEXT,
    settings     TEXT NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE connections (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL,
    host               TEXT NOT NULL,
    fields             TEXT NOT NULL,
    credential_names   TEXT NOT NULL DEFAULT '[]',
    credentials_sealed TEXT,
    status             TEXT NOT NULL,
    last_error         TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    CONSTRAINT connections_tenant_name_key UNIQUE (tenant_id, name)
);
CREATE INDEX connections_tenant ON connections (tenant_id);

CREATE TABLE tenant_secrets (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL,
    sealed     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retires_at INTEGER
);
CREATE INDEX tenant_secrets_lookup ON tenant_secrets (tenant_id, purpose);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    dedupe_key       TEXT,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX jobs_pending_dedupe ON jobs (tenant_id, kind, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status = 'pending';
CREATE INDEX jobs_ready ON jobs (status, priority, run_at);
CREATE INDEX jobs_tenant_status ON jobs (tenant_id, status);

CREATE TABLE request_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    connection_id TEXT NOT NULL,
    at            INTEGER NOT NULL,
    method        TEXT NOT NULL,
    url           TEXT NOT NULL,
    status        INTEGER,
    latency_ms    INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    request_body  TEXT,
    response_body TEXT,
    error         TEXT
);
CREATE INDEX request_log_connection_at ON request_log (tenant_id, connection_id, at);
CREATE INDEX request_log_at ON request_log (at);
