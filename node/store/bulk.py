"""Inserting many rows at once, by the fastest route each database offers inside the session's transaction; and
looking many values up in `IN (...)` lists small enough for every database (`in_list_slices`).

SQLAlchemy's Core `insert(table), [dicts]` processes every parameter in Python before the driver sees it; for the
node's bulk paths (mirror records, report intake) that costs more than the insert itself:
- SQLite: the tuples go straight to the driver's executemany (mirror_records: 49k rows/s through SQLAlchemy,
  129k rows/s direct);
- PostgreSQL with psycopg: the rows are streamed with COPY, parsed by the server in its own process
  (mirror_records: 98 µs a row as SQLAlchemy's batched multi-row INSERT, 25 µs with COPY);
- any other driver: SQLAlchemy's batched INSERT.
Errors are raised as SQLAlchemy raises the driver's (IntegrityError, OperationalError, ...), so callers handle one
family of exceptions whatever the route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Dialect, LargeBinary, Select, delete, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

if TYPE_CHECKING:
    from sqlalchemy.orm import InstrumentedAttribute

    from node.store.db import Store

from node.store.db import unavailable_if_read_only

T = TypeVar("T")

# Values per IN list: far below every database's limit of bound parameters (PostgreSQL 65,535; SQLite 250,000, and
# 999 before 3.32), where one list of a whole import's or batch's values was refused.
IN_LIST_CHUNK = 500


def in_list_slices(values: Sequence[T]) -> Iterator[Sequence[T]]:
    """`values` in consecutive slices of at most IN_LIST_CHUNK, one `IN (...)` list each."""
    for start in range(0, len(values), IN_LIST_CHUNK):
        yield values[start:start + IN_LIST_CHUNK]


def rows_page(session: Session, query: Select[Any], limit: int | None) -> tuple[list[Any], bool]:
    """At most `limit` rows of `query` (None: all) and whether more follow: one row more than the page is read, so a
    last page names no cursor."""
    rows = list(session.scalars(query if limit is None else query.limit(limit + 1)))
    more = limit is not None and len(rows) > limit
    return (rows[:limit] if more else rows), more


def insert_rows(session: Session, table: Any, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert `rows`, tuples in `columns` order, into `table` (a mapped class or a Table) in the session's
    transaction. Values are plain Python values (int, str, bytes, datetime, None) as the mapped columns take them."""
    if not rows:
        return
    columns_of = getattr(table, "__table__", table).c
    name = getattr(table, "__tablename__", None) or table.name
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        processors = [(position, _last_value_kept(process)) for position, column in enumerate(columns)
                      if (process := _sqlite_processor(columns_of[column].type, connection.dialect)) is not None]
        if processors:
            rows = [_converted(row, processors) for row in rows]
        sql = f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
        connection.exec_driver_sql(sql, list(rows))
    elif connection.dialect.driver == "psycopg":  # psycopg adapts int, str, bytes and datetime itself
        sql = f"COPY {name} ({', '.join(columns)}) FROM STDIN"
        driver_error = connection.dialect.loaded_dbapi.Error
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with closing(cursor), cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        except driver_error as exc:
            raise unavailable_if_read_only(DBAPIError.instance(sql, None, exc, driver_error)) from exc
    else:
        session.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


def _sqlite_processor(column_type: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """How SQLAlchemy would convert a value for this column on SQLite (DateTime to its text form); None when the
    driver takes the value as it is. sqlite3 binds bytes as a BLOB, so LargeBinary's memoryview wrapping is
    skipped: it was most of the cost of SQLAlchemy's own executemany for report intake."""
    if isinstance(column_type, LargeBinary):
        return None
    return column_type.dialect_impl(dialect).bind_processor(dialect)


def _last_value_kept(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`process`, answering again without a call for the value it was last given (the same object): every row of a
    request or an import chunk carries one timestamp, whose conversion to SQLite's text form was 2.1 of the 2.6 µs a
    row spent here (30,000 outbox rows)."""
    last: list[Any] = [_NOTHING, None]

    def convert(value: Any) -> Any:
        if value is not last[0]:
            last[0], last[1] = value, process(value)
        return last[1]

    return convert


_NOTHING = object()


def _converted(row: tuple[Any, ...], processors: Sequence[tuple[int, Callable[[Any], Any]]]) -> tuple[Any, ...]:
    values = list(row)
    for position, process in processors:
        values[position] = process(values[position])
    return tuple(values)


def delete_in_slices(store: Store, id_column: InstrumentedAttribute[int], *conditions: Any, slice_rows: int) -> int:
    """Delete the rows of `id_column`'s table matching `conditions`, `slice_rows` at a time in id order, each slice its
    own transaction (a first pass over a large table never holds the write lock for long); the count deleted.

    Each slice looks only past the last id the one before deleted: rows kept ahead of the deleted ones (the velocity
    fingerprints of loans still held, older than an erased applicant's) were otherwise read again by every slice, a
    pass quadratic in them and a write lock held longer slice after slice."""
    deleted, after = 0, None
    while True:
        bounded = conditions if after is None else (*conditions, id_column > after)
        oldest = select(id_column).where(*bounded).order_by(id_column).limit(slice_rows)
        with store.transaction() as session:
            gone = list(session.scalars(delete(id_column.class_).where(id_column.in_(oldest)).returning(id_column)
                                        .execution_options(synchronize_session=False)))
        deleted += len(gone)
        if len(gone) < slice_rows:
            return deleted
        after = max(gone)
