-- Tarbox schema v1: tenants, layers, versioned inodes and directory entries,
-- content-addressed blocks. Every tenant table's primary key starts with
-- tenant_id (row-level security and Citus-style distribution both key on it).

CREATE FUNCTION tarbox_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('tarbox.tenant_id', true), '')::uuid $$;

CREATE TABLE tenants (
    tenant_id   uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Mutable per-tenant state. Its row is the tenant's write lock: every
-- transaction that changes metadata or stores blocks updates it first.
CREATE TABLE tenant_state (
    tenant_id     uuid PRIMARY KEY REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    block_size    integer NOT NULL,
    quota_bytes   bigint,
    quota_inodes  bigint,
    used_bytes    bigint NOT NULL DEFAULT 0,
    used_inodes   bigint NOT NULL DEFAULT 0,
    gen           bigint NOT NULL DEFAULT 0,
    head_layer    bigint NOT NULL
);

-- Layer ids come from one sequence, so a layer always has a larger id than
-- its ancestors and "newest version in the chain" is max(layer_id).
CREATE SEQUENCE layer_id_seq;
-- Inode numbers are handed out in ranges of 1024 per nextval() call.
CREATE SEQUENCE ino_seq START WITH 1024 INCREMENT BY 1024;

CREATE TABLE layers (
    tenant_id   uuid NOT NULL,
    layer_id    bigint NOT NULL,
    parent_id   bigint,
    message     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    frozen      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, layer_id)
);

-- kind: 1 regular file, 2 directory, 3 symlink. Times in ns since the epoch.
-- content_layer: the layer whose extents rows hold this version's bytes.
CREATE TABLE inodes (
    tenant_id      uuid NOT NULL,
    ino            bigint NOT NULL,
    layer_id       bigint NOT NULL,
    kind           smallint NOT NULL,
    mode           integer NOT NULL,
    nlink          integer NOT NULL,
    size           bigint NOT NULL,
    atime_ns       bigint NOT NULL,
    mtime_ns       bigint NOT NULL,
    ctime_ns       bigint NOT NULL,
    target         text,
    content_layer  bigint,
    PRIMARY KEY (tenant_id, ino, layer_id)
);

-- ino NULL is a whiteout: the name was removed in this layer.
CREATE TABLE dirents (
    tenant_id   uuid NOT NULL,
    parent_ino  bigint NOT NULL,
    name        text NOT NULL,
    layer_id    bigint NOT NULL,
    ino         bigint,
    PRIMARY KEY (tenant_id, parent_ino, name, layer_id)
);

-- Block idx of a file version covers bytes [idx*block_size, (idx+1)*block_size).
-- A missing idx, or bytes past a short block, read as zeros.
-- Negative layer ids are staging rows that pin blocks of writes in progress.
CREATE TABLE extents (
    tenant_id  uuid NOT NULL,
    ino        bigint NOT NULL,
    layer_id   bigint NOT NULL,
    idx        bigint NOT NULL,
    hash       bytea NOT NULL,
    PRIMARY KEY (tenant_id, ino, layer_id, idx)
);
CREATE INDEX extents_hash ON extents (tenant_id, hash);

-- Content-addressed by BLAKE3, deduplicated within a tenant only.
CREATE TABLE blocks (
    tenant_id  uuid NOT NULL,
    hash       bytea NOT NULL,
    len        integer NOT NULL,
    data       bytea NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, hash)
);

-- Quotas are enforced by the database, under the tenant_state row lock, so
-- concurrent writers cannot overshoot. Shrinking usage is always allowed.
CREATE FUNCTION tarbox_check_quota() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.quota_bytes IS NOT NULL AND NEW.used_bytes > NEW.quota_bytes
       AND NEW.used_bytes > OLD.used_bytes THEN
        RAISE EXCEPTION 'tenant byte quota exceeded (% > % bytes)', NEW.used_bytes, NEW.quota_bytes
            USING ERRCODE = 'TBQ01';
    END IF;
    IF NEW.quota_inodes IS NOT NULL AND NEW.used_inodes > NEW.quota_inodes
       AND NEW.used_inodes > OLD.used_inodes THEN
        RAISE EXCEPTION 'tenant inode quota exceeded (% > % inodes)', NEW.used_inodes, NEW.quota_inodes
            USING ERRCODE = 'TBQ02';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tenant_state_quota BEFORE UPDATE ON tenant_state
    FOR EACH ROW EXECUTE FUNCTION tarbox_check_quota();

-- Takes the tenant's write lock and bumps its generation. Returns the
-- generation before the bump, so the caller can tell whether anyone else
-- committed since its caches were filled.
CREATE FUNCTION tarbox_lock() RETURNS bigint
LANGUAGE sql AS $$
    UPDATE tenant_state SET gen = gen + 1 WHERE tenant_id = tarbox_tenant() RETURNING gen - 1
$$;

-- Stores new blocks, releases blocks no extent references any more, and
-- applies the usage deltas, all at the end of a flush (after the extents rows
-- changed), so the quota check sees the net change.
CREATE FUNCTION tarbox_apply_blocks(p_hash bytea[], p_data bytea[], p_release bytea[], p_inodes bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t uuid := tarbox_tenant();
    added bigint := 0;
    freed bigint := 0;
BEGIN
    IF cardinality(p_hash) > 0 THEN
        WITH ins AS (
            INSERT INTO blocks (tenant_id, hash, len, data)
            SELECT t, h, length(d), d FROM unnest(p_hash, p_data) AS u(h, d)
            ON CONFLICT DO NOTHING RETURNING len)
        SELECT coalesce(sum(len), 0) INTO added FROM ins;
    END IF;
    IF cardinality(p_release) > 0 THEN
        WITH del AS (
            DELETE FROM blocks b WHERE b.tenant_id = t AND b.hash = ANY(p_release)
              AND NOT EXISTS (SELECT 1 FROM extents e WHERE e.tenant_id = t AND e.hash = b.hash)
            RETURNING len)
        SELECT coalesce(sum(len), 0) INTO freed FROM del;
    END IF;
    IF added <> 0 OR freed <> 0 OR p_inodes <> 0 THEN
        UPDATE tenant_state SET used_bytes = used_bytes + added - freed, used_inodes = used_inodes + p_inodes
        WHERE tenant_id = t;
    END IF;
END $$;

-- Row-level security: the application role sees and writes only the rows of
-- the tenant named by the connection's tarbox.tenant_id setting.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE layers ENABLE ROW LEVEL SECURITY;
ALTER TABLE inodes ENABLE ROW LEVEL SECURITY;
ALTER TABLE dirents ENABLE ROW LEVEL SECURITY;
ALTER TABLE extents ENABLE ROW LEVEL SECURITY;
ALTER TABLE blocks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants USING (tenant_id = tarbox_tenant());
CREATE POLICY tenant_isolation ON tenant_state
    USING (tenant_id = tarbox_tenant()) WITH CHECK (tenant_id = tarbox_tenant());
CREATE POLICY tenant_isolation ON layers
    USING (tenant_id = tarbox_tenant()) WITH CHECK (tenant_id = tarbox_tenant());
CREATE POLICY tenant_isolation ON inodes
    USING (tenant_id = tarbox_tenant()) WITH CHECK (tenant_id = tarbox_tenant());
CREATE POLICY tenant_isolation ON dirents
    USING (tenant_id = tarbox_tenant()) WITH CHECK (tenant_id = tarbox_tenant());
CREATE POLICY tenant_isolation ON extents
    USING (tenant_id = tarbox_tenant()) WITH CHECK (tenant_id = tarbox_tenant());
CREATE POLICY tenant_isolation ON blocks
    USING (tenant_id = tarbox_tenant()) WITH CHECK (tenant_id = tarbox_tenant());

GRANT USAGE ON SCHEMA tarbox TO tarbox_app;
GRANT SELECT ON tenants TO tarbox_app;
GRANT SELECT ON tenant_state TO tarbox_app;
GRANT UPDATE (used_bytes, used_inodes, gen, head_layer) ON tenant_state TO tarbox_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON layers, inodes, dirents, extents, blocks TO tarbox_app;
GRANT USAGE ON SEQUENCE layer_id_seq, ino_seq TO tarbox_app;
