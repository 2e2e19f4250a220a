"""The replica set: replication status, one consistent snapshot, leases on the master, the DDL watcher, the kill script."""
