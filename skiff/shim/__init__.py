"""The per-container supervisor (see docs/shim.md; the protocol is in :mod:`.protocol`).

``python -m skiff.shim start ...`` starts one; the daemon talks to it with
:class:`skiff.shim.client.ShimClient` and reads logs with :func:`skiff.shim.logs.read_logs`.
Nothing is imported here: every shim loads only what it uses.
"""
