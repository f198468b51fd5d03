-- API keys that machine channels (a PBX posting call events, the widget's backend) present as
-- `Authorization: Bearer crmhub_…`. Only a SHA-256 of the key is kept; `prefix` (the first
-- characters after `crmhub_`) lets an operator tell keys apart without the secret.
CREATE TABLE channel_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    CONSTRAINT channel_keys_tenant_name_key UNIQUE (tenant_id, name)
);
