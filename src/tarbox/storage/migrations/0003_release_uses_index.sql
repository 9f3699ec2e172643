-- The release step probes extents by (tenant_id, hash). On tables that grow
-- fast, statistics lag and the planner picked a sequential scan of extents,
-- cached in the function's plan: every delete scanned all extents (measured
-- 3.5 ms per unlink at 10,000 files). The probe is always selective, so the
-- function plans without sequential scans.
ALTER FUNCTION tarbox_apply_blocks(bytea[], bytea[], bytea[], bigint) SET enable_seqscan = off;

-- Keep statistics fresh on tables that grow by thousands of rows a second:
-- stale estimates (rows=1) made the planner scan a tenant's whole table.
ALTER TABLE dirents SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 200);
ALTER TABLE inodes SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 200);
ALTER TABLE extents SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 200);
ALTER TABLE blocks SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 200);
