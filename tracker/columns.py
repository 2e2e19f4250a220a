"""``tracker.columns.load_data_sql``: the documented entry point for loaders (kept where the README names it).

The implementation lives with the dump's column encodings in :mod:`tracker.dump.columns`.
"""

from tracker.dump.columns import load_data_sql

__all__ = ["load_data_sql"]
