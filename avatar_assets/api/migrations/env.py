"""Alembic's entry point for the job API's state: always online, on the connection `state.migrate()` locked."""

from alembic import context

from avatar_assets.api.state import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
