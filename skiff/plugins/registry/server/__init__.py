"""`skiff registry serve`: an OCI distribution v1.1 registry over the local filesystem.

Modules, one job each: ``errors`` (the spec's error codes), ``names`` (what a repository name,
tag and reference may be), ``storage`` (the on-disk layout: blobs, repository links, tags),
``uploads`` (upload sessions on disk), ``manifests`` (validation of pushed manifests),
``auth`` (htpasswd, ES256 tokens, access rules) and ``guard`` (applying them to a request),
``gc`` (online garbage collection), ``proxy`` (pull-through cache), ``config`` (the YAML/JSON
config file), ``context`` (what handlers share), ``routes_blobs`` and ``routes_manifests``
(the handlers), ``app`` (routing and the aiohttp application) and ``serve`` (processes,
TLS, workers).
"""
