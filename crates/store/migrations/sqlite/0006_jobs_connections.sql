-- Jobs carry the connection they work for; while it needs new credentials they are `paused`
-- (never claimed) and resume when it is active again. Triggers keep both rules, and a per-tenant
-- count of open jobs (pending, paused, running) for the queue-depth cap, so that enqueue reads
-- one row instead of counting the tenant's jobs.

ALTER TABLE jobs ADD COLUMN connection_id TEXT REFERENCES connections(id) ON DELETE CASCADE;
CREATE INDEX jobs_connection_status ON jobs (connection_id, status) WHERE connection_id IS NOT NULL;

-- The claim walks the runnable jobs in the order it takes them, and expired leases by expiry.
DROP INDEX jobs_ready;
CREATE INDEX jobs_claim ON jobs (status, priority DESC, run_at, created_at);
CREATE INDEX jobs_lease ON jobs (status, lease_expires_at);

CREATE TABLE job_depth (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    open      INTEGER NOT NULL DEFAULT 0
);
INSERT INTO job_depth (tenant_id, open)
    SELECT tenant_id, COUNT(*) FROM jobs WHERE status IN ('pending', 'paused', 'running') GROUP BY tenant_id;

CREATE TRIGGER jobs_depth_insert AFTER INSERT ON jobs
WHEN NEW.status IN ('pending', 'paused', 'running')
BEGIN
    INSERT INTO job_depth (tenant_id, open) VALUES (NEW.tenant_id, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET open = open + 1;
END;

CREATE TRIGGER jobs_depth_delete AFTER DELETE ON jobs
WHEN OLD.status IN ('pending', 'paused', 'running')
BEGIN
    UPDATE job_depth SET open = open - 1 WHERE tenant_id = OLD.tenant_id;
END;

CREATE TRIGGER jobs_depth_update AFTER UPDATE OF status ON jobs
WHEN (OLD.status IN ('pending', 'paused', 'running')) <> (NEW.status IN ('pending', 'paused', 'running'))
BEGIN
    UPDATE job_depth SET open = open + (CASE WHEN NEW.status IN ('pending', 'paused', 'running') THEN 1 ELSE -1 END)
        WHERE tenant_id = NEW.tenant_id;
END;

-- Refused credentials pause the connection's waiting jobs (running ones are paused by the
-- worker when they fail the same way).
CREATE TRIGGER connections_pause_jobs AFTER UPDATE OF status ON connections
WHEN NEW.status = 'needs_reauth' AND OLD.status <> 'needs_reauth'
BEGIN
    UPDATE jobs SET status = 'paused', updated_at = NEW.updated_at WHERE connection_id = NEW.id AND status = 'pending';
END;

-- Usable again: paused jobs resume. One pending job per dedupe key: a paused job whose key a
-- pending job covers is merged into it, and of paused twins the first is kept.
CREATE TRIGGER connections_resume_jobs AFTER UPDATE OF status ON connections
WHEN NEW.status IN ('active', 'failing') AND OLD.status NOT IN ('active', 'failing')
BEGIN
    DELETE FROM jobs WHERE connection_id = NEW.id AND status = 'paused' AND dedupe_key IS NOT NULL
        AND EXISTS (SELECT 1 FROM jobs p WHERE p.status = 'pending' AND p.tenant_id = jobs.tenant_id
                    AND p.kind = jobs.kind AND p.dedupe_key = jobs.dedupe_key);
    DELETE FROM jobs WHERE connection_id = NEW.id AND status = 'paused' AND dedupe_key IS NOT NULL
        AND id <> (SELECT MIN(d.id) FROM jobs d WHERE d.status = 'paused' AND d.tenant_id = jobs.tenant_id
                   AND d.kind = jobs.kind AND d.dedupe_key = jobs.dedupe_key);
    UPDATE jobs SET status = 'pending', updated_at = NEW.updated_at WHERE connection_id = NEW.id AND status = 'paused';
END;
