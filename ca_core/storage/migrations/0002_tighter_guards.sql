-- certstatus schema, version 2: close NULL holes in the guards; know each OCSP signer's serial.

-- A CHECK whose expression is NULL passes, so "reason = 6" let a NULL reason through.
ALTER TABLE certificates DROP CONSTRAINT certificates_status_fields;
ALTER TABLE certificates ADD CONSTRAINT certificates_status_fields CHECK (
    (status = 'good' AND revoked_at IS NULL AND reason IS NULL AND invalidity_date IS NULL)
    OR (status = 'suspended' AND revoked_at IS NOT NULL AND reason IS NOT NULL AND reason = 6)
    OR (status = 'revoked' AND revoked_at IS NOT NULL AND reason IS NOT NULL
        AND reason IN (0, 1, 2, 3, 4, 5, 9, 10))
);

-- The same guard as version 1, with NULL-safe comparisons throughout, and the invalidity
-- date of a revoked certificate frozen with the rest of its revocation.
CREATE OR REPLACE FUNCTION certificates_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'certificates are never deleted (issuer %, serial %)', OLD.issuer_id, encode(OLD.serial, 'hex')
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.issuer_id IS DISTINCT FROM OLD.issuer_id OR NEW.serial IS DISTINCT FROM OLD.serial
       OR NEW.der IS DISTINCT FROM OLD.der
       OR NEW.not_before IS DISTINCT FROM OLD.not_before OR NEW.not_after IS DISTINCT FROM OLD.not_after
       OR NEW.subject IS DISTINCT FROM OLD.subject OR NEW.profile IS DISTINCT FROM OLD.profile
       OR NEW.holder_id IS DISTINCT FROM OLD.holder_id
       OR NEW.crl_partition IS DISTINCT FROM OLD.crl_partition OR NEW.issued_at IS DISTINCT FROM OLD.issued_at THEN
        RAISE EXCEPTION 'a certificate''s contents are immutable (issuer %, serial %)', OLD.issuer_id, encode(OLD.serial, 'hex')
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status = 'revoked' AND (NEW.status IS DISTINCT FROM OLD.status
                                   OR NEW.reason IS DISTINCT FROM OLD.reason
                                   OR NEW.revoked_at IS DISTINCT FROM OLD.revoked_at
                                   OR NEW.invalidity_date IS DISTINCT FROM OLD.invalidity_date) THEN
        RAISE EXCEPTION 'certificate (issuer %, serial %) is revoked; revocation is final', OLD.issuer_id, encode(OLD.serial, 'hex')
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;

-- The signer's own certificate (in certificates) tells whether it may still be used: a
-- revoked signer must never be chosen, however long its validity. Rows written by version 1
-- have no serial; they are treated as good and expire on their own (30 days by default).
ALTER TABLE ocsp_signers ADD COLUMN serial bytea CHECK (octet_length(serial) BETWEEN 1 AND 20);
