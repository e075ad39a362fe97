-- certstatus schema, version 4: what the CRL publisher has published.
--
-- Each publication takes the next number of its issuer's crl_numbers sequence (shared by
-- full, partition and delta CRLs, RFC 5280 5.2.3). A base publication (the full CRL and
-- every partition CRL) records the outbox position it reflects; delta CRLs list the
-- certificates named by outbox events after it. Both positions are exact cuts: the
-- publisher takes them while no status change is in flight for the issuer (see
-- ca_core.storage.postgres.crl_snapshot).
CREATE TABLE crl_publications (
    issuer_id    smallint NOT NULL REFERENCES issuers (id),
    number       bigint NOT NULL CHECK (number > 0),
    kind         text NOT NULL CHECK (kind IN ('base', 'delta')),
    -- For a delta: the number of the base CRL it completes.
    base_number  bigint,
    -- Every status event of this issuer with an id up to here is reflected.
    outbox_mark  bigint NOT NULL CHECK (outbox_mark >= 0),
    this_update  timestamptz NOT NULL,
    next_update  timestamptz NOT NULL,
    -- Entries and size of the issuer-wide CRL of this publication.
    entries      bigint NOT NULL CHECK (entries >= 0),
    bytes        bigint NOT NULL CHECK (bytes > 0),
    published_at timestamptz NOT NULL,
    -- A base and the delta bridging the previous base to it share a number: they are
    -- issued together from one cut (RFC 5280 5.2.3).
    PRIMARY KEY (issuer_id, number, kind),
    CHECK ((kind = 'delta') = (base_number IS NOT NULL)),
    CHECK (base_number IS NULL OR base_number < number),
    CHECK (next_update > this_update)
);
CREATE INDEX crl_publications_latest ON crl_publications (issuer_id, kind, number DESC);

-- A base CRL reads every listed certificate of an issuer in (partition, serial) order. With
-- the serial in the index the rows come out sorted (bench/crl.py: a million rows were sorted
-- on disk before). It replaces certificates_listed, whose columns are its prefix.
CREATE INDEX certificates_crl ON certificates (issuer_id, crl_partition, serial) WHERE status <> 'good';
DROP INDEX certificates_listed;

-- The publisher asks, every poll, whether an issuer has status events after its last CRL,
-- and takes the highest one as its cut: without this index both scan the outbox (one
-- "issued" row per certificate ever issued) for an issuer with no recent change.
CREATE INDEX outbox_status_changes ON outbox (issuer_id, id) WHERE event <> 'issued';
