-- Read delegations that last until recalled. A reader may keep the tenant's
-- advisory lock shared between operations (its opens then need no round trip);
-- a writer that cannot take the lock at once must not wait for the delegation
-- to expire but ask for it back. So writers try first: when the lock is held,
-- they fail fast with SQLSTATE TBD01, send a recall (NOTIFY on the tenant's
-- channel, outside any transaction) and then wait for the lock, a bounded
-- while at a time (lock_timeout), sending the recall again between waits.
-- (tarbox_take_lock is in 0011, for tarbox_flush.)

CREATE FUNCTION tarbox_lock_usage(p_wait boolean, p_wait_ms integer)
RETURNS TABLE (gen bigint, used_bytes bigint, quota_bytes bigint, used_inodes bigint, quota_inodes bigint)
LANGUAGE plpgsql AS $$
DECLARE
    t uuid := tarbox_tenant();
BEGIN
    PERFORM tarbox_take_lock(t, p_wait, p_wait_ms);
    RETURN QUERY
        UPDATE tenant_state s SET gen = s.gen + 1 WHERE s.tenant_id = t
        RETURNING s.gen - 1, s.used_bytes, s.quota_bytes, s.used_inodes, s.quota_inodes;
END $$;

-- Share the tenant's lock again right after this session's own commit, if no one
-- else holds it exclusively (never waits: a writer that got in first simply means
-- no delegation now). Two statements, so the state is read after the lock is held.
-- Same row as tarbox_share_state.
CREATE FUNCTION tarbox_try_share()
RETURNS TABLE (gen bigint, head_layer bigint, block_size integer, frozen boolean, shared boolean)
LANGUAGE plpgsql AS $$
DECLARE
    got boolean := pg_try_advisory_xact_lock_shared(tarbox_tenant_key(tarbox_tenant()));
BEGIN
    RETURN QUERY
        SELECT s.gen, s.head_layer, s.block_size, l.frozen, got FROM tenant_state s
        JOIN layers l ON l.tenant_id = s.tenant_id AND l.layer_id = s.head_layer
        WHERE s.tenant_id = tarbox_tenant();
END $$;
