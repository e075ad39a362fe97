-- certstatus schema, version 1: the system of record.
--
-- Sizing: the model population is 11 million certificates (5.5 M holders x 2 cards'
-- worth of certificates). Every query the hot paths make is answered by the primary key
-- (issuer_id, serial) or by a small partial index; a holder look-up uses a b-tree on
-- holder_id. Status changes are rare next to reads, so there are few indexes to update.

CREATE TYPE cert_status AS ENUM ('good', 'suspended', 'revoked');

-- Private keys, sealed by ca_core.keystore.KeyVault (AES-256-GCM under a scrypt KEK).
-- The label is bound into the ciphertext, so a blob moved to another row will not open.
CREATE TABLE sealed_keys (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    label       text NOT NULL UNIQUE,
    key_type    text NOT NULL,
    public_key  bytea NOT NULL,
    sealed      bytea NOT NULL,
    created_at  timestamptz NOT NULL
);

-- Certification authorities: one root and the issuing CAs under it.
CREATE TABLE issuers (
    id             smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9-]{0,30}$'),
    kind           text NOT NULL CHECK (kind IN ('root', 'issuing')),
    parent_id      smallint REFERENCES issuers (id),
    certificate    bytea NOT NULL,
    key_id         integer NOT NULL REFERENCES sealed_keys (id),
    -- Fixed when the issuer is created: each certificate's CRL distribution point
    -- names its partition for life.
    crl_partitions smallint NOT NULL CHECK (crl_partitions BETWEEN 1 AND 4096),
    created_at     timestamptz NOT NULL,
    CHECK ((kind = 'root') = (parent_id IS NULL))
);

-- Delegated OCSP signing certificates (id-kp-OCSPSigning + ocsp-nocheck). Renewal adds
-- a row; the signer uses the newest one that is currently valid.
CREATE TABLE ocsp_signers (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    issuer_id   smallint NOT NULL REFERENCES issuers (id),
    certificate bytea NOT NULL,
    key_id      integer NOT NULL REFERENCES sealed_keys (id),
    not_before  timestamptz NOT NULL,
    not_after   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX ocsp_signers_current ON ocsp_signers (issuer_id, not_after DESC);

-- Every certificate any issuer signed, CA and OCSP certificates included.
CREATE TABLE certificates (
    issuer_id       smallint NOT NULL REFERENCES issuers (id),
    -- Minimal big-endian unsigned encoding (RFC 5280: at most 20 octets).
    serial          bytea NOT NULL CHECK (octet_length(serial) BETWEEN 1 AND 20),
    profile         text NOT NULL,
    subject         text NOT NULL,
    holder_id       text,
    not_before      timestamptz NOT NULL,
    not_after       timestamptz NOT NULL,
    status          cert_status NOT NULL DEFAULT 'good',
    revoked_at      timestamptz,
    reason          smallint,
    invalidity_date timestamptz,
    crl_partition   smallint NOT NULL CHECK (crl_partition >= 0),
    der             bytea NOT NULL,
    issued_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (issuer_id, serial),
    CHECK (not_before < not_after),
    -- A row's status fields always agree with each other (RFC 5280 CRLReason codes;
    -- suspension is certificateHold, 6).
    CONSTRAINT certificates_status_fields CHECK (
        (status = 'good' AND revoked_at IS NULL AND reason IS NULL AND invalidity_date IS NULL)
        OR (status = 'suspended' AND revoked_at IS NOT NULL AND reason = 6)
        OR (status = 'revoked' AND revoked_at IS NOT NULL AND reason IN (0, 1, 2, 3, 4, 5, 9, 10))
    )
);
-- CRL generation reads only listed certificates: a small partial index.
CREATE INDEX certificates_listed ON certificates (issuer_id, crl_partition) WHERE status <> 'good';
-- Registration officers look certificates up by holder number.
CREATE INDEX certificates_holder ON certificates (holder_id) WHERE holder_id IS NOT NULL;

-- Defence in depth: the state machine of DESIGN.md, enforced by the database itself,
-- so that no code path (or hand-written SQL) can bring a revoked certificate back.
CREATE FUNCTION certificates_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'certificates are never deleted (issuer %, serial %)', OLD.issuer_id, encode(OLD.serial, 'hex')
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.issuer_id <> OLD.issuer_id OR NEW.serial <> OLD.serial OR NEW.der <> OLD.der
       OR NEW.not_before <> OLD.not_before OR NEW.not_after <> OLD.not_after
       OR NEW.subject <> OLD.subject OR NEW.profile <> OLD.profile
       OR NEW.crl_partition <> OLD.crl_partition OR NEW.issued_at <> OLD.issued_at THEN
        RAISE EXCEPTION 'a certificate''s contents are immutable (issuer %, serial %)', OLD.issuer_id, encode(OLD.serial, 'hex')
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status = 'revoked' AND (NEW.status <> 'revoked' OR NEW.reason <> OLD.reason
                                   OR NEW.revoked_at <> OLD.revoked_at) THEN
        RAISE EXCEPTION 'certificate (issuer %, serial %) is revoked; revocation is final', OLD.issuer_id, encode(OLD.serial, 'hex')
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER certificates_guard BEFORE UPDATE OR DELETE ON certificates
    FOR EACH ROW EXECUTE FUNCTION certificates_guard();

-- Status events for the signer (transactional outbox). Written in the same transaction
-- as the change; the signer marks an event processed only after Redis holds the new
-- bytes. LISTEN/NOTIFY on channel certstatus_outbox is only a wake-up; this table is
-- the truth.
CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    issuer_id    smallint NOT NULL,
    serial       bytea NOT NULL,
    event        text NOT NULL CHECK (event IN ('issued', 'revoked', 'suspended', 'resumed')),
    status       cert_status NOT NULL,
    created_at   timestamptz NOT NULL,
    processed_at timestamptz,
    FOREIGN KEY (issuer_id, serial) REFERENCES certificates (issuer_id, serial)
);
CREATE INDEX outbox_pending ON outbox (id) WHERE processed_at IS NULL;

-- Who did what, when, with the state before and after. Append-only: the application
-- role can neither change nor remove a row.
CREATE TABLE audit_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL,
    actor           text NOT NULL,
    action          text NOT NULL,
    issuer_id       smallint REFERENCES issuers (id),
    serial          bytea,
    before          jsonb,
    after           jsonb,
    idempotency_key text
);
CREATE INDEX audit_log_certificate ON audit_log (issuer_id, serial) WHERE serial IS NOT NULL;
CREATE INDEX audit_log_actor ON audit_log (actor, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Client-supplied idempotency keys, scoped by actor. The first answer is kept and
-- returned to every repeat of the same request; a different request under the same
-- key is refused.
CREATE TABLE idempotency_keys (
    actor        text NOT NULL,
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    operation    text NOT NULL,
    request_hash bytea NOT NULL,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (actor, key)
);

-- One CRL number sequence per issuer, shared by full, partitioned and delta CRLs
-- (RFC 5280 5.2.3: monotonically increasing, never reused).
CREATE TABLE crl_numbers (
    issuer_id   smallint PRIMARY KEY REFERENCES issuers (id),
    last_number bigint NOT NULL DEFAULT 0 CHECK (last_number >= 0),
    updated_at  timestamptz
);
