-- certstatus schema, version 7: TLS client certificates as admin API credentials.
--
-- A client certificate opens the admin API only while it is registered here, the
-- registration is not revoked, and the certificate itself is good (not revoked, not
-- suspended, not expired) in the certificates table: revoking or suspending an admin's
-- certificate through the CA shuts them out at once, and a citizen certificate from the
-- same issuing CA never opens the API at all.
CREATE TABLE api_client_certs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    role         text NOT NULL CHECK (role IN ('operator', 'registration-officer', 'auditor')),
    issuer_id    smallint NOT NULL,
    serial       bytea NOT NULL,
    created_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    UNIQUE (issuer_id, serial),
    FOREIGN KEY (issuer_id, serial) REFERENCES certificates (issuer_id, serial)
);
