-- Contact sync (issue 12): a pipeline mirrors the contacts of a source connection (one whose
-- connector lists changes: Kommo by webhooks and backfill, Vtiger by its polled change feed)
-- into one list of a destination connection (Unisender). `field_map` maps source fields
-- (`name`, `first_name`, `last_name`, `phone`, Kommo custom field codes) to destination field
-- names. `deletion` is what a contact gone from the source does to its addresses: 'exclude'
-- removes them from the pipeline's list, 'delete' deletes them account-wide. `poll_secs` NULL
-- means the source pushes (webhooks); otherwise the change feed is read every `poll_secs` from
-- `change_cursor`.
CREATE TABLE sync_pipelines (
    id                        TEXT PRIMARY KEY,
    tenant_id                 TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                      TEXT NOT NULL,
    source_connection_id      TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    destination_connection_id TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    list_id                   TEXT NOT NULL,
    field_map                 TEXT NOT NULL,
    deletion                  TEXT NOT NULL CHECK (deletion IN ('exclude', 'delete')),
    poll_secs                 BIGINT,
    change_cursor             TEXT,
    status                    TEXT NOT NULL CHECK (status IN ('active', 'paused')),
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL,
    CONSTRAINT sync_pipelines_tenant_name_key UNIQUE (tenant_id, name)
);
CREATE INDEX sync_pipelines_source ON sync_pipelines (source_connection_id);

-- What was last sent for each source contact: a fingerprint of the rows (an unchanged contact
-- sends nothing) and the e-mails and phones (JSON arrays) the destination holds for it, so a
-- deletion or a changed address knows what to remove even when the source no longer says.
CREATE TABLE sync_index (
    pipeline_id TEXT NOT NULL REFERENCES sync_pipelines(id) ON DELETE CASCADE,
    contact_id  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    emails      TEXT NOT NULL,
    phones      TEXT NOT NULL,
    sent_at     BIGINT NOT NULL,
    PRIMARY KEY (pipeline_id, contact_id)
);

-- The index by address: an address is removed from the destination only when no other
-- contact of the pipeline still has it. Kept in step with `sync_index` by the store.
CREATE TABLE sync_index_emails (
    pipeline_id TEXT NOT NULL REFERENCES sync_pipelines(id) ON DELETE CASCADE,
    email       TEXT NOT NULL,
    contact_id  TEXT NOT NULL,
    PRIMARY KEY (pipeline_id, email, contact_id)
);

-- Backfills and reconciliations. `checkpoint` is the source cursor after the last committed
-- page (a resumed run starts there); `total` is NULL while unknown. At most one run of a kind
-- runs per pipeline (the partial unique index), so a second start returns the running one.
CREATE TABLE sync_runs (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    pipeline_id TEXT NOT NULL REFERENCES sync_pipelines(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('backfill', 'reconcile')),
    status      TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled')),
    checkpoint  TEXT,
    done        BIGINT NOT NULL DEFAULT 0,
    total       BIGINT,
    errors      BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT,
    report      TEXT,
    started_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE UNIQUE INDEX sync_runs_one_running ON sync_runs (pipeline_id, kind) WHERE status = 'running';
CREATE INDEX sync_runs_pipeline ON sync_runs (pipeline_id, started_at);

-- Dead letters for single rows the destination refused (a role address, a spam trap): the
-- rest of the contact's page went through, so these are kept for operators, not retried.
CREATE TABLE sync_row_errors (
    id          BIGSERIAL PRIMARY KEY,
    pipeline_id TEXT NOT NULL REFERENCES sync_pipelines(id) ON DELETE CASCADE,
    contact_id  TEXT NOT NULL,
    email       TEXT,
    code        TEXT NOT NULL,
    message     TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX sync_row_errors_pipeline ON sync_row_errors (pipeline_id, id);

-- Webhook bodies as received, sealed with the vault (they carry personal data). 'accepted'
-- ones were turned into jobs in the same transaction; 'quarantined' ones could not be read
-- (or belong to no pipeline) and wait for an operator; 'redriven' ones were accepted later.
CREATE TABLE webhook_deliveries (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    connection_id TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    received_at   BIGINT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('accepted', 'quarantined', 'redriven')),
    events        BIGINT NOT NULL,
    body_sealed   TEXT NOT NULL,
    error         TEXT
);
CREATE INDEX webhook_deliveries_status ON webhook_deliveries (tenant_id, status, received_at);
