-- Idempotency keys of requests that write (an agent UI creating a ticket, a contact, an SMS):
-- a repeat with the same key is answered from here instead of writing again. Scoped by tenant
-- and route (the method and path template, e.g. 'POST /t/{tenant}/contacts'); `request_hash`
-- (SHA-256 hex of the route and body) tells a true repeat from a key reused for other content.
-- `state` is 'running' while the first request works and 'done' once its answer is stored;
-- `created_at` is when the current attempt began, so a 'running' row older than the store's
-- stale limit belongs to a crashed instance and is taken over. Rows past
-- `expires_at` count as absent and are pruned by the maintenance job.
CREATE TABLE idempotency_keys (
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    route           TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('running', 'done')),
    response_status INTEGER,
    response_body   TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, route, key)
);
-- Pruning runs per tenant (one maintenance job each).
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (tenant_id, expires_at);
