-- The command gateway (mirrors the embedded 0005_gateway): the hash-chained audit log,
-- per-device command counters, commands.

CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    ts        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    body      TEXT NOT NULL
);

-- Append-only: the platform never updates or deletes a record (a superuser can still drop
-- the trigger; the hash chain is what catches that).
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;

CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

CREATE TABLE command_counters (
    device_id TEXT COLLATE "C" PRIMARY KEY,
    counter   BIGINT NOT NULL
);

CREATE TABLE commands (
    id         TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL,
    state      TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX commands_by_time ON commands (created_at);
