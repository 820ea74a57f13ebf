"""The data layer: connections, the pool, transactions, migrations, and one module per table area."""

from shared.db.connection import Connection
from shared.db.pool import Database, advisory_lock

__all__ = ["Connection", "Database", "advisory_lock"]
