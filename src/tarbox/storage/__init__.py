"""PostgreSQL storage: schema, migrations, pools, row-level security, embedded server."""

from tarbox.storage.database import Database, db_error

__all__ = ["Database", "db_error"]
