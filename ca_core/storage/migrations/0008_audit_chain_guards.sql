-- certstatus schema, version 8: guards around the audit chain (from review of version 6).
--
-- * The chain head moves only from inside the chain trigger: an UPDATE by anyone else (which
--   could stop every audited write, or make verify report deletions) is refused.
-- * chain_seq starts at 1: a row slipped in below the chain (seq 0 or negative) would be
--   outside what 'audit verify' walks.
CREATE FUNCTION audit_chain_head_moves_only_by_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() <= 1 THEN
        RAISE EXCEPTION 'the audit chain head moves only when an audit row is appended'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_chain_head_guard BEFORE UPDATE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_moves_only_by_trigger();

ALTER TABLE audit_log ADD CONSTRAINT audit_log_chain_seq_positive CHECK (chain_seq >= 1);
