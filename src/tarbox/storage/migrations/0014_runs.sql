-- Runs: one row per WASI run (module, component or Python), written when it ends,
-- for `tarbox serve`'s console and API: what ran, how it ended, how long it took,
-- and the start of its output. What it changed is in the audit log under the same
-- run_id. Deleted with the tenant.
CREATE TABLE runs (
    tenant_id     uuid NOT NULL,
    run_id        uuid NOT NULL,
    started_at    timestamptz NOT NULL,
    duration      double precision NOT NULL,
    command       text NOT NULL DEFAULT '',
    status        text NOT NULL,
    exit_code     integer NOT NULL,
    trap          text,
    checkpoint    bigint,
    stdout        bytea NOT NULL,          -- the first 64 KiB
    stderr        bytea NOT NULL,
    stdout_bytes  bigint NOT NULL,         -- the whole output's length
    stderr_bytes  bigint NOT NULL,
    PRIMARY KEY (tenant_id, run_id)
);
CREATE INDEX runs_started ON runs (tenant_id, started_at DESC);
ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON runs
    USING (tenant_id = (SELECT tarbox_tenant())) WITH CHECK (tenant_id = (SELECT tarbox_tenant()));
GRANT SELECT, INSERT, DELETE ON runs TO tarbox_app;
