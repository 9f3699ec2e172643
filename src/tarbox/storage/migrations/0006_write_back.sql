-- Write-back windows. A WASI run keeps the tenant's write lock for a few
-- milliseconds across many operations and commits them together. Every writer
-- also holds an advisory lock on the tenant for its transaction; a reader
-- revalidating its caches waits on that lock in shared mode first, so it sees
-- every file closed in a window that was open when it asked (close-to-open,
-- like an NFSv4 write delegation that is recalled when someone else opens).

CREATE FUNCTION tarbox_tenant_key(t uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended(t::text, 7406)
$$;

-- The write lock, with what a window needs to decide whether it may run
-- ahead of the quota check: the generation before the bump, usage and quotas.
CREATE FUNCTION tarbox_lock_usage()
RETURNS TABLE (gen bigint, used_bytes bigint, quota_bytes bigint, used_inodes bigint, quota_inodes bigint)
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(tarbox_tenant_key(tarbox_tenant()));
    UPDATE tenant_state s SET gen = s.gen + 1 WHERE s.tenant_id = tarbox_tenant()
    RETURNING s.gen - 1, s.used_bytes, s.quota_bytes, s.used_inodes, s.quota_inodes
$$;

CREATE OR REPLACE FUNCTION tarbox_lock() RETURNS bigint
LANGUAGE sql AS $$
    SELECT gen FROM tarbox_lock_usage()
$$;

-- The tenant's state once no window is open, and with it a read delegation:
-- inside an explicit transaction the shared lock stays until it ends, and
-- while it is held nobody else can commit, so the caller's caches stay exact
-- without asking again. Waits at most 5 s (a writer stuck longer must not stop
-- every reader; they get what is committed and shared = false). Each
-- statement of a plpgsql function takes a fresh snapshot, so the SELECT sees
-- the commit the wait was for.
CREATE FUNCTION tarbox_share_state()
RETURNS TABLE (gen bigint, head_layer bigint, block_size integer, frozen boolean, shared boolean)
LANGUAGE plpgsql AS $$
DECLARE
    got boolean := true;
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    BEGIN
        PERFORM pg_advisory_xact_lock_shared(tarbox_tenant_key(tarbox_tenant()));
    EXCEPTION WHEN lock_not_available THEN
        got := false;
    END;
    RETURN QUERY
        SELECT s.gen, s.head_layer, s.block_size, l.frozen, got FROM tenant_state s
        JOIN layers l ON l.tenant_id = s.tenant_id AND l.layer_id = s.head_layer
        WHERE s.tenant_id = tarbox_tenant();
END $$;
