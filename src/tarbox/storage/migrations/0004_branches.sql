-- Named branches: each has its own head layer. tenant_state.branch is the
-- branch the view follows (NULL: detached, viewing a layer by id). Opening a
-- child layer moves the followed branch in the same statement, under the
-- tenant write lock, so one branch never has two heads.
CREATE TABLE branches (
    tenant_id   uuid NOT NULL,
    name        text NOT NULL,
    head_layer  bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
ALTER TABLE branches ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON branches
    USING (tenant_id = tarbox_tenant()) WITH CHECK (tenant_id = tarbox_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON branches TO tarbox_app;

ALTER TABLE tenant_state ADD COLUMN branch text;
GRANT UPDATE (branch) ON tenant_state TO tarbox_app;

INSERT INTO branches (tenant_id, name, head_layer) SELECT tenant_id, 'main', head_layer FROM tenant_state;
UPDATE tenant_state SET branch = 'main';
