-- Staged publication. A file being written through a descriptor is published
-- whole when its last writing descriptor closes (or at fsync). Blocks written
-- before that are stored as they come, and pinned by extents rows at the
-- negative layer -stage_id, so neither a flush's release nor gc removes them;
-- committed rows keep showing the previous version. A stage whose writer died
-- is reclaimed by gc once it has not been renewed for a while (every commit of
-- its writer renews it).
CREATE TABLE stages (
    tenant_id   uuid NOT NULL,
    stage_id    bigint NOT NULL,
    ino         bigint NOT NULL,
    renewed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, stage_id)
);
ALTER TABLE stages ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stages
    USING (tenant_id = (SELECT tarbox_tenant())) WITH CHECK (tenant_id = (SELECT tarbox_tenant()));
GRANT SELECT, INSERT, UPDATE, DELETE ON stages TO tarbox_app;

CREATE FUNCTION tarbox_stage(p_stage bigint[], p_ino bigint[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO stages (tenant_id, stage_id, ino)
    SELECT tarbox_tenant(), s, i FROM unnest(p_stage, p_ino) AS u(s, i)
    ON CONFLICT (tenant_id, stage_id) DO UPDATE SET renewed_at = now()
$$;

-- Ends stages: their rows go, their blocks are no longer pinned by them. With
-- p_strict, every stage must still exist: one reclaimed by gc may have lost
-- blocks, so publishing it would reference missing data.
CREATE FUNCTION tarbox_unstage(p_stage bigint[], p_ino bigint[], p_strict boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t uuid := tarbox_tenant();
    gone bigint;
BEGIN
    WITH d AS (DELETE FROM stages WHERE tenant_id = t AND stage_id = ANY(p_stage) RETURNING 1)
    SELECT count(*) INTO gone FROM d;
    IF p_strict AND gone < cardinality(p_stage) THEN
        RAISE EXCEPTION 'staged writes of a file were reclaimed by gc before it was closed'
            USING ERRCODE = 'TBS01';
    END IF;
    DELETE FROM extents e USING unnest(p_ino, p_stage) AS u(i, s)
    WHERE e.tenant_id = t AND e.ino = u.i AND e.layer_id = -u.s;
END $$;

-- Unused since 0006 (writers call tarbox_lock_usage()).
DROP FUNCTION tarbox_lock();
