-- Owners and device numbers, as Linux keeps them (docs/fuse.md): every inode version
-- has a uid, a gid and, for device nodes, a device number (0 otherwise). Kinds 4-7
-- are FIFOs, sockets, character and block devices: a name and metadata, no content.
-- Existing inodes become root's, which is what every mount showed them as when
-- mounted by root.
-- (Written to apply again over itself: tests replay the migrations after 0013 on a
-- distributed database.)
ALTER TABLE inodes ADD COLUMN IF NOT EXISTS uid integer NOT NULL DEFAULT 0;
ALTER TABLE inodes ADD COLUMN IF NOT EXISTS gid integer NOT NULL DEFAULT 0;
ALTER TABLE inodes ADD COLUMN IF NOT EXISTS rdev bigint NOT NULL DEFAULT 0;

-- tarbox_flush (0013) with the owners and device numbers of the inode versions it writes.
DROP FUNCTION IF EXISTS tarbox_flush(
    uuid, bigint, bigint, bigint[],
    bigint[], smallint[], integer[], integer[], bigint[], bigint[], bigint[], bigint[], text[], bigint[],
    bigint[], text[], bigint[], text[], bigint[],
    bigint[], bigint[], bigint[], bigint[], bigint[],
    bigint[], bigint[], bigint[], bytea[],
    bigint[], bigint[], bigint[], bigint[], bigint[], bigint[],
    bigint[], uuid[], text[], text[], text[], bigint[], bigint[],
    bytea[], bytea[], bytea[], boolean, boolean);

CREATE OR REPLACE FUNCTION tarbox_flush(
    p_tenant uuid, p_gen bigint, p_head bigint,
    -- inodes: deleted at the head; upserted at the head
    p_ino_del bigint[],
    p_ino bigint[], p_kind smallint[], p_mode integer[], p_nlink integer[], p_size bigint[],
    p_atime bigint[], p_mtime bigint[], p_ctime bigint[], p_target text[], p_content bigint[],
    -- their owners and device numbers (NULL: all 0, root's and none)
    p_uid integer[], p_gid integer[], p_rdev bigint[],
    -- directory entries: deleted at the head; set (ino NULL: whiteout)
    p_de_del_parent bigint[], p_de_del_name text[],
    p_de_parent bigint[], p_de_name text[], p_de_ino bigint[],
    -- extents: files dropped; maps copied from their base layer; truncated; blocks set
    -- (p_x_stage NULL: at the head, else at the staging layer -stage)
    p_x_drop bigint[], p_x_copy_ino bigint[], p_x_copy_base bigint[],
    p_x_trunc_ino bigint[], p_x_trunc_from bigint[],
    p_x_ino bigint[], p_x_stage bigint[], p_x_idx bigint[], p_x_hash bytea[],
    -- stages renewed, ended, and lost (ended without their blocks being required)
    p_renew_stage bigint[], p_renew_ino bigint[],
    p_unstage_stage bigint[], p_unstage_ino bigint[],
    p_lost_stage bigint[], p_lost_ino bigint[],
    -- audit records
    p_a_ns bigint[], p_a_run uuid[], p_a_op text[], p_a_path text[], p_a_path2 text[],
    p_a_bytes bigint[], p_a_layer bigint[],
    -- blocks stored and released, then usage and quota
    p_block_hash bytea[], p_block_data bytea[], p_release bytea[],
    -- also delete audit records past the tenant's retention; wait for the WAL flush
    p_prune boolean, p_durable boolean
) RETURNS TABLE (gen bigint, used_bytes bigint, quota_bytes bigint, used_inodes bigint, quota_inodes bigint)
LANGUAGE plpgsql AS $$
DECLARE
    t uuid := tarbox_tenant();
    found_gen bigint;
    inodes_delta bigint := 0;
    added bigint := 0;
    freed bigint := 0;
    seqs bigint[];
BEGIN
    IF t IS DISTINCT FROM p_tenant THEN
        RAISE EXCEPTION 'connection is not bound to tenant %', p_tenant USING ERRCODE = '42501';
    END IF;
    IF p_durable THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
    IF p_gen IS NOT NULL THEN
        -- every generation bump happens under this lock (tarbox_lock_usage, or here), so
        -- a plain read of it is exact; the bump itself joins the usage update at the end
        -- without waiting: a lock held elsewhere (TBD01) sends the caller the slow way,
        -- which recalls read delegations and waits (0012)
        PERFORM tarbox_take_lock(t, false, 0);
        SELECT s.gen INTO found_gen FROM tenant_state s WHERE s.tenant_id = t;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tenant % does not exist', t USING ERRCODE = 'TBT01';
        END IF;
        IF found_gen <> p_gen THEN
            RAISE EXCEPTION 'tenant changed since the caches were filled (generation % is now %)', p_gen, found_gen
                USING ERRCODE = 'TBC01';
        END IF;
    END IF;

    IF cardinality(p_ino_del) > 0 OR cardinality(p_ino) > 0 THEN
        -- inode rows are counted as they are really inserted and deleted
        WITH d AS (
            DELETE FROM inodes WHERE tenant_id = t AND layer_id = p_head AND ino = ANY(p_ino_del)
            RETURNING 1),
        i AS (
            INSERT INTO inodes (tenant_id, ino, layer_id, kind, mode, nlink, size,
                                atime_ns, mtime_ns, ctime_ns, target, content_layer, uid, gid, rdev)
            SELECT o.tenant_id, u.i, p_head, u.k, u.m, u.n, u.s, u.a, u.mt, u.c, u.tg, u.cl,
                   coalesce(u.uid, 0), coalesce(u.gid, 0), coalesce(u.rdev, 0)
            FROM tenant_state o CROSS JOIN
                 unnest(p_ino, p_kind, p_mode, p_nlink, p_size, p_atime, p_mtime, p_ctime, p_target, p_content,
                        p_uid, p_gid, p_rdev)
                 AS u(i, k, m, n, s, a, mt, c, tg, cl, uid, gid, rdev)
            WHERE o.tenant_id = t
            ON CONFLICT (tenant_id, ino, layer_id) DO UPDATE SET
                kind = EXCLUDED.kind, mode = EXCLUDED.mode, nlink = EXCLUDED.nlink,
                size = EXCLUDED.size, atime_ns = EXCLUDED.atime_ns, mtime_ns = EXCLUDED.mtime_ns,
                ctime_ns = EXCLUDED.ctime_ns, target = EXCLUDED.target,
                content_layer = EXCLUDED.content_layer,
                uid = EXCLUDED.uid, gid = EXCLUDED.gid, rdev = EXCLUDED.rdev
            RETURNING xmax = 0 AS new)
        SELECT (SELECT count(*) FROM i WHERE new) - (SELECT count(*) FROM d) INTO inodes_delta;
    END IF;
    IF cardinality(p_de_del_parent) > 0 THEN
        -- one index probe per pair (a generic plan, sequential scans off): 2,000
        -- names of one directory take 2 ms, where "name = ANY(...)" with a pair
        -- test took 150 ms
        DELETE FROM dirents d USING unnest(p_de_del_parent, p_de_del_name) AS u(p, n)
        WHERE d.tenant_id = t AND d.parent_ino = u.p AND d.name = u.n AND d.layer_id = p_head;
    END IF;
    IF cardinality(p_de_parent) > 0 THEN
        INSERT INTO dirents (tenant_id, parent_ino, name, layer_id, ino)
        SELECT o.tenant_id, u.p, u.n, p_head, u.i
        FROM tenant_state o CROSS JOIN unnest(p_de_parent, p_de_name, p_de_ino) AS u(p, n, i) WHERE o.tenant_id = t
        ON CONFLICT (tenant_id, parent_ino, name, layer_id) DO UPDATE SET ino = EXCLUDED.ino;
    END IF;
    IF cardinality(p_x_drop) > 0 THEN
        DELETE FROM extents e WHERE e.tenant_id = t AND e.layer_id = p_head AND e.ino = ANY(p_x_drop);
    END IF;
    IF cardinality(p_x_copy_ino) > 0 THEN
        INSERT INTO extents (tenant_id, ino, layer_id, idx, hash)
        SELECT e.tenant_id, e.ino, p_head, e.idx, e.hash
        FROM extents e JOIN unnest(p_x_copy_ino, p_x_copy_base) AS u(i, l)
          ON e.ino = u.i AND e.layer_id = u.l
        WHERE e.tenant_id = t
        ON CONFLICT DO NOTHING;
    END IF;
    IF cardinality(p_x_trunc_ino) > 0 THEN
        DELETE FROM extents e USING unnest(p_x_trunc_ino, p_x_trunc_from) AS u(i, f)
        WHERE e.tenant_id = t AND e.layer_id = p_head AND e.ino = u.i AND e.idx >= u.f;
    END IF;
    IF cardinality(p_x_ino) > 0 THEN
        INSERT INTO extents (tenant_id, ino, layer_id, idx, hash)
        SELECT o.tenant_id, u.i, coalesce(-u.s, p_head), u.x, u.h
        FROM tenant_state o CROSS JOIN unnest(p_x_ino, p_x_stage, p_x_idx, p_x_hash) AS u(i, s, x, h)
        WHERE o.tenant_id = t
        ON CONFLICT (tenant_id, ino, layer_id, idx) DO UPDATE SET hash = EXCLUDED.hash;
    END IF;
    IF cardinality(p_renew_stage) > 0 THEN
        PERFORM tarbox_stage(p_renew_stage, p_renew_ino);
    END IF;
    IF cardinality(p_unstage_stage) > 0 THEN
        PERFORM tarbox_unstage(p_unstage_stage, p_unstage_ino, true);
    END IF;
    IF cardinality(p_lost_stage) > 0 THEN
        PERFORM tarbox_unstage(p_lost_stage, p_lost_ino, false);
    END IF;
    IF cardinality(p_a_ns) > 0 THEN
        SELECT array_agg(nextval('audit_seq_seq')) INTO seqs FROM generate_series(1, cardinality(p_a_ns));
        INSERT INTO audit (tenant_id, seq, at, run_id, op, path, path2, bytes, layer_id) OVERRIDING SYSTEM VALUE
        SELECT o.tenant_id, u.q, to_timestamp(u.ns / 1e9), u.r, u.o, u.p, u.p2, u.b, u.l
        FROM tenant_state o CROSS JOIN unnest(seqs, p_a_ns, p_a_run, p_a_op, p_a_path, p_a_path2, p_a_bytes, p_a_layer)
             AS u(q, ns, r, o, p, p2, b, l)
        WHERE o.tenant_id = t;
    END IF;
    IF p_prune THEN
        DELETE FROM audit a WHERE a.tenant_id = t
          AND a.at < now() - (SELECT s.audit_retention FROM tenant_state s WHERE s.tenant_id = t);
    END IF;
    -- blocks stored and released as tarbox_apply_blocks does, the usage applied once
    IF cardinality(p_block_hash) > 0 THEN
        WITH ins AS (
            INSERT INTO blocks (tenant_id, hash, len, data)
            SELECT o.tenant_id, h, length(d), d
            FROM tenant_state o CROSS JOIN unnest(p_block_hash, p_block_data) AS u(h, d) WHERE o.tenant_id = t
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
    -- one update of the tenant's row: the generation (when this call took the lock) and
    -- the usage; the quota trigger refuses growth past a quota (TBQ01, TBQ02)
    RETURN QUERY
        UPDATE tenant_state s SET
            gen = s.gen + (p_gen IS NOT NULL)::int,
            used_inodes = s.used_inodes + inodes_delta,
            used_bytes = s.used_bytes + added - freed
        WHERE s.tenant_id = t
        RETURNING s.gen, s.used_bytes, s.quota_bytes, s.used_inodes, s.quota_inodes;
END $$;

