"""skiffd's side of ``POST /build``: the workspace (snapshots, mounts, the runtime), the
SQLite build cache, and the build service the router calls."""
