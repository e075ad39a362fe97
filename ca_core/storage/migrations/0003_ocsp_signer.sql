-- certstatus schema, version 3: the OCSP signer's shared work list.
--
-- Several signer processes cooperate through these rows: whoever holds a chunk's lease
-- signs it, so no response is signed twice and a crashed signer's chunk is picked up
-- again when its lease runs out.

-- The refresh sweep. Each issuer's serials are cut into 256 ranges of the primary key
-- (ca_core.storage.postgres.chunk_bounds); a chunk is due again before half the response
-- validity has passed since its last pass began.
CREATE TABLE ocsp_sweep (
    issuer_id        smallint NOT NULL REFERENCES issuers (id),
    chunk            smallint NOT NULL CHECK (chunk BETWEEN 0 AND 255),
    due_at           timestamptz NOT NULL,
    lease_owner      text,
    lease_until      timestamptz,
    -- Progress of the pass under way: the last serial signed, when the pass began, and the
    -- issuer's fill epoch then (epochs, not times, decide whether a pass counts for a fill:
    -- signers' clocks may disagree).
    cursor           bytea,
    pass_started_at  timestamptz,
    pass_epoch       bigint,
    -- The last completed pass: when it began (its responses expire first), its epoch, and
    -- when it ended.
    last_pass_started_at timestamptz,
    last_pass_epoch  bigint,
    last_done_at     timestamptz,
    PRIMARY KEY (issuer_id, chunk)
);
CREATE INDEX ocsp_sweep_due ON ocsp_sweep (due_at);

-- A full fill of an issuer's responses (after Redis lost them, or for a new issuer).
-- Responders say "unauthorized" for a serial Redis does not hold only while Redis holds
-- the issuer's "filled" marker, which the signer sets once every chunk has completed a
-- pass begun in the current epoch.
--
-- redis_run_id is the Redis server instance (INFO server run_id) the last fill went to:
-- a restarted Redis may have come back from an older snapshot holding stale answers, so
-- a new instance is treated like a flush, and every certificate whose status ever changed
-- is re-signed first.
CREATE TABLE ocsp_fill (
    issuer_id       smallint PRIMARY KEY REFERENCES issuers (id),
    epoch           bigint NOT NULL DEFAULT 0,
    fill_started_at timestamptz,
    redis_run_id    text
);
