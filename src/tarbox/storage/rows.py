"""The one row (or value) a query always returns: psycopg types ``fetchone()`` as
possibly absent; a query such as ``SELECT count(*)`` or ``SHOW`` never is."""

from __future__ import annotations

from typing import Any

import psycopg

from tarbox.errors import DatabaseError


def one_row(cursor: psycopg.Cursor) -> tuple[Any, ...]:
    """The query's one row."""
    row = cursor.fetchone()
    if row is None:
        raise DatabaseError("the database returned no row where one always comes")
    return row


def one_value(cursor: psycopg.Cursor) -> Any:
    """The first column of the query's one row."""
    return one_row(cursor)[0]
