-- certstatus schema, version 6: the audit log becomes a hash chain.
--
-- Every row carries the SHA-256 of the row before it (prev_hash) and its own hash
-- (row_hash = SHA-256(prev_hash || record)), in the order of chain_seq (1, 2, 3, ...).
-- Editing, deleting or inserting a row breaks the chain at that row; 'certstatus audit
-- verify' recomputes it. The record is a canonical byte string of the row's fields, defined
-- once here (audit_log_record) and reimplemented independently in ca_core/audit.py, which
-- is what verifies it:
--
--   'certstatus-audit-v1' then, for each of id, chain_seq, at (µs since 1970, UTC), actor,
--   action, issuer_id, serial (lowercase hex), before (jsonb text), after (jsonb text),
--   idempotency_key: '<octets>:<UTF-8 text>,' or, for NULL, '~,'.
--
-- The chain's head (last seq and hash) is one row, locked by each insert until its
-- transaction ends: the chain order is the commit order, and there is no fork. The lock is
-- taken by the last statement of an audited transaction (the audit row is written last),
-- so it is held for about one commit.

CREATE FUNCTION audit_log_field(v text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN octet_length(v)::text || ':' || v || ',';

CREATE FUNCTION audit_log_record(
    id bigint, chain_seq bigint, at timestamptz, actor text, action text, issuer_id smallint,
    serial bytea, before jsonb, after jsonb, idempotency_key text
) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN convert_to(
        'certstatus-audit-v1'
        || coalesce(audit_log_field(id::text), '~,')
        || coalesce(audit_log_field(chain_seq::text), '~,')
        || coalesce(audit_log_field((extract(epoch FROM at) * 1000000)::bigint::text), '~,')
        || coalesce(audit_log_field(actor), '~,')
        || coalesce(audit_log_field(action), '~,')
        || coalesce(audit_log_field(issuer_id::text), '~,')
        || coalesce(audit_log_field(encode(serial, 'hex')), '~,')
        || coalesce(audit_log_field(before::text), '~,')
        || coalesce(audit_log_field(after::text), '~,')
        || coalesce(audit_log_field(idempotency_key), '~,'),
        'UTF8');

CREATE TABLE audit_chain_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint NOT NULL CHECK (seq >= 0),
    hash      bytea NOT NULL CHECK (octet_length(hash) = 32)
);

ALTER TABLE audit_log
    ADD COLUMN chain_seq bigint,
    ADD COLUMN prev_hash bytea,
    ADD COLUMN row_hash  bytea;

-- Rows written before this version join the chain in id order.
ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
DO $$
DECLARE
    r    record;
    n    bigint := 0;
    prev bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
    h    bytea;
BEGIN
    FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
        n := n + 1;
        h := sha256(prev || audit_log_record(r.id, n, r.at, r.actor, r.action, r.issuer_id, r.serial,
                                             r.before, r.after, r.idempotency_key));
        UPDATE audit_log SET chain_seq = n, prev_hash = prev, row_hash = h WHERE id = r.id;
        prev := h;
    END LOOP;
    INSERT INTO audit_chain_head (seq, hash) VALUES (n, prev);
END
$$;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;

ALTER TABLE audit_log
    ALTER COLUMN chain_seq SET NOT NULL,
    ALTER COLUMN prev_hash SET NOT NULL,
    ALTER COLUMN row_hash SET NOT NULL,
    ADD CONSTRAINT audit_log_chain_seq UNIQUE (chain_seq);

CREATE FUNCTION audit_log_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head audit_chain_head%ROWTYPE;
BEGIN
    SELECT * INTO head FROM audit_chain_head FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the audit chain head is missing; the audit log cannot be appended to'
            USING ERRCODE = 'restrict_violation';
    END IF;
    NEW.chain_seq := head.seq + 1;
    NEW.prev_hash := head.hash;
    NEW.row_hash := sha256(head.hash || audit_log_record(
        NEW.id, NEW.chain_seq, NEW.at, NEW.actor, NEW.action, NEW.issuer_id, NEW.serial,
        NEW.before, NEW.after, NEW.idempotency_key));
    UPDATE audit_chain_head SET seq = NEW.chain_seq, hash = NEW.row_hash;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_chain();

CREATE FUNCTION audit_chain_head_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit chain head cannot be removed (% refused)', TG_OP USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER audit_chain_head_keep BEFORE DELETE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_keep();
CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_head_keep();
