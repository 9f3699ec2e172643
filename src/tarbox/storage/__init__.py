"""PostgreSQL storage: schema, migrations, pools, row-level security, embedded server."""

from tarbox.storage.database import Database

__all__ = ["Database"]
