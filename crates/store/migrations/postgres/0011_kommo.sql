-- Kommo (amoCRM) connections: the OAuth connect flow, the webhook destination, the widget's
-- settings. Times are Unix milliseconds.

-- One row per authorisation started (`connection connect`, POST …/oauth/start). `state_hash`
-- is the SHA-256 (hex) of the random `state` sent to Kommo; the state itself is never kept.
-- A state is good for one callback until `expires_at` (20 minutes after `created_at`):
-- the callback sets `used_at` in the same statement that checks it, so two callbacks with one
-- state cannot both pass. The callback does not know the tenant: it looks the row up by hash.
CREATE TABLE oauth_states (
    state_hash    TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    connection_id TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    mode          TEXT NOT NULL CHECK (mode IN ('popup', 'post_message')),
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
);
CREATE INDEX oauth_states_expiry ON oauth_states (tenant_id, expires_at);

-- The SHA-256 (hex) of every authorisation code a callback brought, so that a replayed code
-- is refused before anything is sent to Kommo. A code lives 20 minutes at Kommo; the rows are
-- pruned by the maintenance job after a day.
CREATE TABLE oauth_codes (
    code_hash     TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    connection_id TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    seen_at       BIGINT NOT NULL
);
CREATE INDEX oauth_codes_seen ON oauth_codes (tenant_id, seen_at);

-- The webhook destination registered at a connection's Kommo account, at most one per
-- connection. The destination URL carries a random secret path segment: only its SHA-256
-- (hex) is kept for comparison, and the URL itself is sealed with the vault (to unregister it).
-- `events` is a JSON list of Kommo event names.
CREATE TABLE kommo_webhooks (
    connection_id      TEXT PRIMARY KEY REFERENCES connections(id) ON DELETE CASCADE,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    secret_hash        TEXT NOT NULL UNIQUE,
    destination_sealed TEXT NOT NULL,
    events             TEXT NOT NULL,
    registered_at      BIGINT NOT NULL
);
CREATE INDEX kommo_webhooks_tenant ON kommo_webhooks (tenant_id);

-- What a Kommo user saved in crmhub's widget: the Unisender API key (sealed with the vault),
-- the list id, and which Kommo user saved it.
CREATE TABLE kommo_widget_settings (
    connection_id            TEXT PRIMARY KEY REFERENCES connections(id) ON DELETE CASCADE,
    tenant_id                TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    unisender_api_key_sealed TEXT NOT NULL,
    unisender_list_id        TEXT NOT NULL,
    kommo_user_id            BIGINT,
    updated_at               BIGINT NOT NULL
);
CREATE INDEX kommo_widget_settings_tenant ON kommo_widget_settings (tenant_id);
