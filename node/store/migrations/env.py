"""Alembic environment: migrations run on the engine the node hands over (see node.store.db).

All of them run in one transaction that first takes the store's migration lock, so that processes starting at
once on one store (API replicas, the node and a command) migrate it one after the other, the later ones finding
it at head; and so that a migration failing half-way (or a process killed during one) leaves the schema as it was.
"""

from __future__ import annotations

from alembic import context
from alembic.script import ScriptDirectory

from node.store.db import UnknownSchemaRevision, lock_for_migration
from node.store.models import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    lock_for_migration(connection)
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    known = {script.revision for script in ScriptDirectory.from_config(context.config).walk_revisions()}
    unknown = sorted(set(context.get_context().get_current_heads()) - known)
    if unknown:
        # A newer node migrated this store; this one cannot tell what that schema holds, so it touches nothing.
        raise UnknownSchemaRevision(
            f"the database at {engine.url.render_as_string()} is at schema revision {', '.join(unknown)}, which this "
            f"version of the node does not know (a newer version migrated it): run that version, or a backup "
            f"taken before it")
    context.run_migrations()
