"""skiff: a container engine (daemon, CLI, OCI runtime, registry)."""

__version__ = "0.1.0"
