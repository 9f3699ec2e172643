-- A connection's tenant binding is signed. Row-level security used to trust
-- the setting tarbox.tenant_id alone, so any SQL on an application-role
-- connection could rebind itself to another tenant. Now the binding also
-- needs tarbox.tenant_token = hex(sha256(key || tenant id)), where the key
-- lives in a table the application role cannot read. Only the owner can mint
-- tokens (tarbox_tenant_token); a connection given A's token cannot name B.
-- (The input has a fixed length, so sha256's length extension does not apply.)

CREATE TABLE tarbox_binding_key (key bytea NOT NULL);
REVOKE ALL ON tarbox_binding_key FROM PUBLIC;
INSERT INTO tarbox_binding_key
    SELECT sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text || clock_timestamp()::text, 'UTF8'));

CREATE FUNCTION tarbox_tenant_token(t uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = tarbox
AS $$ SELECT encode(sha256(k.key || convert_to(t::text, 'UTF8')), 'hex') FROM tarbox_binding_key k $$;
REVOKE EXECUTE ON FUNCTION tarbox_tenant_token(uuid) FROM PUBLIC;

-- NULL (no rows visible) unless the token matches the tenant id.
CREATE OR REPLACE FUNCTION tarbox_tenant() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = tarbox
AS $$
    SELECT s.t FROM (SELECT nullif(current_setting('tarbox.tenant_id', true), '')::uuid AS t) s, tarbox_binding_key k
    WHERE current_setting('tarbox.tenant_token', true) = encode(sha256(k.key || convert_to(s.t::text, 'UTF8')), 'hex')
$$;

-- (SELECT ...) makes the check an init plan: computed once per statement, not per row.
ALTER POLICY tenant_isolation ON tenants USING (tenant_id = (SELECT tarbox_tenant()));
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenant_state', 'layers', 'inodes', 'dirents', 'extents', 'blocks', 'branches'] LOOP
        EXECUTE format('ALTER POLICY tenant_isolation ON %I USING (tenant_id = (SELECT tarbox_tenant()))'
                       ' WITH CHECK (tenant_id = (SELECT tarbox_tenant()))', t);
    END LOOP;
END $$;
