"""``/networks``: list, inspect, create, remove, connect, disconnect, prune (Docker's API)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from skiff.daemon.http import json_body, json_response, qfilters, route
from skiff.daemon.networks.requests import (
    EndpointRequest,
    NetworkCreate,
    parse_connect,
    parse_disconnect,
    parse_network_create,
)


class NetworksBackend(Protocol):
    def list_networks(self, filters: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]: ...
    def inspect(self, ref: str) -> dict[str, Any]: ...
    def create(self, req: NetworkCreate) -> str: ...
    def remove(self, ref: str) -> None: ...
    def connect(self, network_ref: str, container_ref: str, req: EndpointRequest) -> None: ...
    def disconnect(self, network_ref: str, container_ref: str, force: bool = False) -> None: ...
    def prune(self, filters: Mapping[str, Sequence[str]]) -> list[str]: ...


class NetworksRouter:
    def __init__(self, backend: NetworksBackend) -> None:
        self.backend = backend

    def register(self, router: web.UrlDispatcher) -> None:
        route(router, "GET", "/networks", self.list)
        route(router, "POST", "/networks/create", self.create)
        route(router, "POST", "/networks/prune", self.prune)
        route(router, "GET", "/networks/{id}", self.inspect)
        route(router, "DELETE", "/networks/{id}", self.delete)
        route(router, "POST", "/networks/{id}/connect", self.connect)
        route(router, "POST", "/networks/{id}/disconnect", self.disconnect)

    async def list(self, request: web.Request) -> web.StreamResponse:
        filters = qfilters(request)
        return json_response(await asyncio.to_thread(self.backend.list_networks, filters))

    async def inspect(self, request: web.Request) -> web.StreamResponse:
        ref = request.match_info["id"]
        return json_response(await asyncio.to_thread(self.backend.inspect, ref))

    async def create(self, request: web.Request) -> web.StreamResponse:
        req = parse_network_create(await json_body(request))
        nid = await asyncio.to_thread(self.backend.create, req)
        return json_response({"Id": nid, "Warning": ""}, status=201)

    async def delete(self, request: web.Request) -> web.StreamResponse:
        await asyncio.to_thread(self.backend.remove, request.match_info["id"])
        return web.Response(status=204)

    async def connect(self, request: web.Request) -> web.StreamResponse:
        container, req = parse_connect(await json_body(request))
        await asyncio.to_thread(self.backend.connect, request.match_info["id"], container, req)
        return web.Response(status=200)

    async def disconnect(self, request: web.Request) -> web.StreamResponse:
        container, force = parse_disconnect(await json_body(request))
        await asyncio.to_thread(self.backend.disconnect, request.match_info["id"], container,
                                force)
        return web.Response(status=200)

    async def prune(self, request: web.Request) -> web.StreamResponse:
        removed = await asyncio.to_thread(self.backend.prune, qfilters(request))
        return json_response({"NetworksDeleted": removed})
