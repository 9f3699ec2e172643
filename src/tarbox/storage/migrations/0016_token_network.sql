-- The network destinations a token's native runs may reach (docs/exec.md, "Network"):
-- HOST:PORT entries, set when the token is made (by whoever holds the owner role, the
-- server's operator), joined with the server's own list; empty: none. Nothing in a
-- request can add to it.
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS allow_net text[] NOT NULL DEFAULT '{}';
