-- Audit log: what changed in a tenant, when, by which run. Rows are written by
-- the same commit as the changes they describe (so the log never claims a
-- change that was rolled back, and never misses a committed one), and pruned
-- after the tenant's retention.
CREATE TABLE audit (
    tenant_id  uuid NOT NULL,
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    at         timestamptz NOT NULL,
    run_id     uuid,
    op         text NOT NULL,
    path       text,
    path2      text,
    bytes      bigint,
    layer_id   bigint,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_run ON audit (tenant_id, run_id);
ALTER TABLE audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit
    USING (tenant_id = (SELECT tarbox_tenant())) WITH CHECK (tenant_id = (SELECT tarbox_tenant()));
GRANT SELECT, INSERT, DELETE ON audit TO tarbox_app;

ALTER TABLE tenant_state ADD COLUMN audit_retention interval NOT NULL DEFAULT '90 days';
