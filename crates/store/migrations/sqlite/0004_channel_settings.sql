-- A channel's configuration (the social inbox's connection, URL lifetime, allowed origins…)
-- gets its own row per tenant and channel kind, reachable only through that channel's API,
-- instead of a key inside the free-form tenant settings that a tenant PATCH could overwrite.
CREATE TABLE channel_settings (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    settings   TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind)
);

-- Existing social-inbox settings move over.
INSERT INTO channel_settings (tenant_id, kind, settings, updated_at)
SELECT id, 'social_inbox', json_extract(settings, '$.social_inbox'), updated_at
FROM tenants
WHERE json_type(settings, '$.social_inbox') = 'object';
UPDATE tenants SET settings = json_remove(settings, '$.social_inbox')
WHERE json_type(settings, '$.social_inbox') IS NOT NULL;
