"""Snapshotters: overlayfs and plain copy, with a SQLite metadata store and a mount helper."""
