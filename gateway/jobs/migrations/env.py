"""Alembic environment: runs on the connection `gateway.jobs.migrate` hands it."""

from alembic import context

from gateway.jobs.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through gateway.jobs.migrate.migrate(engine); the gateway does it at start")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
