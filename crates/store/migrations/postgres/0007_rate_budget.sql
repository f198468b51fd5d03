-- Rate budgets shared by the instances of one installation: a token bucket per key (a CRM
-- account, a remote host). `tokens` as of `updated_at` (Unix ms, the database's clock, so that
-- instances' clocks need not agree); refilled by elapsed time at each take. SQLite has no such
-- table: one instance per database, whose in-process buckets are the whole budget.
CREATE TABLE rate_budget (
    key        TEXT PRIMARY KEY,
    tokens     DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);
