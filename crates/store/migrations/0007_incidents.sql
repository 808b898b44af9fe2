-- Operator accounts, their login sessions and API tokens, and incidents.
-- Passwords are stored as Argon2id PHC strings; tokens only as SHA-256.

CREATE TABLE users (
    name       TEXT PRIMARY KEY NOT NULL,
    role       TEXT NOT NULL,
    disabled   INTEGER NOT NULL DEFAULT 0,
    body       TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE user_tokens (
    sha256     TEXT PRIMARY KEY NOT NULL,
    user       TEXT NOT NULL REFERENCES users (name),
    kind       TEXT NOT NULL,
    expires_at INTEGER,
    body       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX user_tokens_user ON user_tokens (user);

CREATE TABLE incidents (
    seq        INTEGER PRIMARY KEY NOT NULL,
    id         TEXT NOT NULL UNIQUE,
    state      TEXT NOT NULL,
    severity   INTEGER NOT NULL,
    owner      TEXT,
    devices    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX incidents_state ON incidents (state, seq);
