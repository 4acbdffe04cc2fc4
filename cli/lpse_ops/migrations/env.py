"""Alembic environment of the lpse-ops state store.

Normally run by :meth:`lpse_ops.state.StateStore.open`, which builds the Alembic ``Config`` in code
and hands over an open connection in ``config.attributes["connection"]``. For development it also
works from the command line::

    alembic -c cli/lpse_ops/migrations/alembic.ini upgrade head
    alembic -c cli/lpse_ops/migrations/alembic.ini revision --autogenerate -m "add backups"

where the URL comes from ``-x url=...``, ``LPSE_OPS_STATE_URL`` or the default SQLite file.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from lpse_ops.state.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch mode for ALTER
        compare_type=True,
    )


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from lpse_ops import config as lpse_config

        url = lpse_config.state_url()
    return url


def run_migrations_offline() -> None:
    """Emit the migration SQL without a database (``alembic upgrade head --sql``)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the connection given by the caller, or one opened from the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from lpse_ops.state.store import engine_for

    engine = engine_for(_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
