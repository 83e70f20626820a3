-- Rampart server store, version 1. Portable SQL: the same text runs on SQLite and PostgreSQL.
-- Times are milliseconds since the Unix epoch; booleans are 0/1; JSON is stored as text.

CREATE TABLE groups (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    policy_version BIGINT NOT NULL,
    created_ms     BIGINT NOT NULL
);

CREATE TABLE policies (
    group_id   TEXT NOT NULL REFERENCES groups (id),
    version    BIGINT NOT NULL,
    body       TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (group_id, version)
);

CREATE TABLE agents (
    id                     TEXT PRIMARY KEY,
    group_id               TEXT NOT NULL REFERENCES groups (id),
    credential_hash        TEXT NOT NULL,
    enrolled_ms            BIGINT NOT NULL,
    last_seen_ms           BIGINT NOT NULL,
    revoked                BIGINT NOT NULL DEFAULT 0,
    identity               TEXT NOT NULL,
    report                 TEXT NOT NULL,
    applied_policy_version BIGINT
);
CREATE INDEX agents_group ON agents (group_id);

CREATE TABLE enrollment_tokens (
    id          TEXT PRIMARY KEY,
    group_id    TEXT NOT NULL REFERENCES groups (id),
    secret_hash TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    max_uses    BIGINT NOT NULL,
    uses        BIGINT NOT NULL DEFAULT 0,
    created_by  TEXT NOT NULL
);

CREATE TABLE events (
    agent_id    TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    time_ms     BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX events_kind ON events (kind, received_ms);

CREATE TABLE admins (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_ms    BIGINT NOT NULL
);

CREATE TABLE admin_sessions (
    token_hash TEXT PRIMARY KEY,
    admin      TEXT NOT NULL REFERENCES admins (name),
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

CREATE TABLE server_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
