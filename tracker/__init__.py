"""tracker: copy every table of a MySQL/MariaDB replica set to object storage."""

__version__ = "0.1.0"
