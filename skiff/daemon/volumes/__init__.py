"""Volumes, binds and tmpfs for skiffd's containers (issue 6)."""
