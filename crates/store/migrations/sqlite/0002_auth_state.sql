-- Connectors' shared login state (sessions, tokens), sealed by the vault. Keys include a hash of
-- the credentials, so only holders of the same credentials share a row.
CREATE TABLE auth_state (
    key        TEXT PRIMARY KEY,
    sealed     TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
