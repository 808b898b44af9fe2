-- The command gateway: the hash-chained audit log, per-device command counters, commands.

CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    body TEXT NOT NULL
);

-- Append-only: the platform never updates or deletes a record (someone with the file can
-- still drop these triggers; the hash chain is what catches that).
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TABLE command_counters (
    device_id TEXT PRIMARY KEY,
    counter INTEGER NOT NULL
);

CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL
);

CREATE INDEX commands_by_time ON commands (created_at);
