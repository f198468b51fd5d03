-- Which CRM record crmhub made for an external call id (for CRMs with nowhere to keep it), per
-- connection: deleted with the connection, pruned by age (call_maps.retention_days).
CREATE TABLE call_maps (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    connection_id TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    call_id       TEXT NOT NULL,
    record_id     TEXT NOT NULL,
    stage         TEXT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, connection_id, call_id)
);
CREATE INDEX call_maps_updated_at ON call_maps (updated_at);
