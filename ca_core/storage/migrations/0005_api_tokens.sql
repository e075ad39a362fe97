-- certstatus schema, version 5: credentials of the admin API.
--
-- A bearer token is shown once, when it is created; only the SHA-256 of its secret part is
-- kept (the secret is 256 random bits, so a fast hash is enough: there is nothing to guess).
-- A revoked token stays on record, so the audit log's actors keep their meaning.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    role         text NOT NULL CHECK (role IN ('operator', 'registration-officer', 'auditor')),
    secret_hash  bytea NOT NULL CHECK (octet_length(secret_hash) = 32),
    created_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
