-- Integration templates, versioned. A published template (scope '') is visible to every
-- tenant; a private one (scope = its tenant's id) only to that tenant. Versions are never
-- rewritten: an update adds a version, and connections stay on the version they pinned.
CREATE TABLE integration_templates (
    id         TEXT PRIMARY KEY,
    scope      TEXT NOT NULL,
    tenant_id  TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    label      TEXT NOT NULL,
    format     TEXT NOT NULL,
    source     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    CONSTRAINT integration_templates_version_key UNIQUE (scope, name, version)
);
CREATE INDEX integration_templates_name ON integration_templates (name);

-- Connections made from templates pin a version and carry the integrator's data
-- (call-centre id, description, info and iframe JSON).
ALTER TABLE connections ADD COLUMN template_version INTEGER;
ALTER TABLE connections ADD COLUMN details TEXT NOT NULL DEFAULT '{}';
