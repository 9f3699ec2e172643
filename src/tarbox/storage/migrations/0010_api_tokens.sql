-- API tokens of `tarbox serve` (docs/server.md). Only a hash of each secret is
-- stored. A token names its tenant inside its own text (tbx_TENANT_ID_SECRET), so
-- the lookup is by primary key (tenant_id, token_id) and, on Citus, routed to the
-- tenant's node. Admin tokens belong to no tenant: tenant_id is the nil UUID.
-- The application role gets no access: tokens are checked by the owner role.
CREATE TABLE api_tokens (
    tenant_id    uuid NOT NULL,
    token_id     uuid NOT NULL,
    secret_hash  bytea NOT NULL,
    name         text NOT NULL DEFAULT '',
    read_only    boolean NOT NULL DEFAULT false,
    admin        boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    PRIMARY KEY (tenant_id, token_id),
    CHECK (admin = (tenant_id = '00000000-0000-0000-0000-000000000000'))
);
ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_tokens
    USING (tenant_id = (SELECT tarbox_tenant())) WITH CHECK (tenant_id = (SELECT tarbox_tenant()));
