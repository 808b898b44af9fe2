-- Operator accounts, their login sessions and API tokens, and incidents (mirrors the
-- embedded 0007_incidents). Passwords are stored as Argon2id PHC strings; tokens only as
-- SHA-256.

CREATE TABLE users (
    name     TEXT COLLATE "C" PRIMARY KEY,
    role     TEXT NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    body     TEXT NOT NULL
);

CREATE TABLE user_tokens (
    sha256     TEXT COLLATE "C" PRIMARY KEY,
    "user"     TEXT NOT NULL REFERENCES users (name),
    kind       TEXT NOT NULL,
    expires_at BIGINT,
    body       TEXT NOT NULL
);
CREATE INDEX user_tokens_user ON user_tokens ("user");

CREATE TABLE incidents (
    seq        BIGINT PRIMARY KEY,
    id         TEXT COLLATE "C" NOT NULL UNIQUE,
    state      TEXT NOT NULL,
    severity   BIGINT NOT NULL,
    owner      TEXT,
    devices    JSONB NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX incidents_state ON incidents (state, seq);
CREATE INDEX incidents_devices ON incidents USING GIN (devices);
