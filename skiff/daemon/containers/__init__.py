"""Containers in the daemon: records (SQLite), their bundles and shims, and the lifecycle."""
