"""The durable job ledger: SQLAlchemy models, migrations, the fair queue, quotas and images."""
