"""Alembic migrations of the job ledger, shipped inside the package (see ``storage.migrate``)."""
