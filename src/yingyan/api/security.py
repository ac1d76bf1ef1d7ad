"""Authentication and authorisation of every API route (no `from __future__ import
annotations` here: FastAPI must see the dependency closures' annotations evaluated).

A key comes in the `x-api-key` header (CompreFace's) or as `Authorization: Bearer <key>`
(Prometheus scrapers). A route declares the permission it needs; a gallery route also checks
the key's gallery scope against the gallery's identity (its id: a gallery created again under
an old name is another gallery), and a service-wide route (metrics) refuses scoped keys. A
valid key refused for its role or scope is audited ("denied")."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from yingyan.access.keys import ApiKey, authenticate, reaches
from yingyan.access.roles import Permission, allows
from yingyan.api.errors import ApiError
from yingyan.api.state import AppState, get_state

api_key_header = APIKeyHeader(name="x-api-key", auto_error=False, description="an API key")
bearer = HTTPBearer(auto_error=False, description="an API key as a bearer token")


async def current_key(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    header_key: Annotated[str | None, Security(api_key_header)] = None,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
) -> ApiKey:
    if credentials is None and request.headers.get("authorization"):
        raise ApiError("unauthenticated", "the Authorization header must be 'Bearer <API key>'")
    token = header_key or (credentials.credentials if credentials else None)
    if not token:
        raise ApiError("unauthenticated", "an API key is required (x-api-key header)")

    def check() -> ApiKey | None:
        with state.db.read() as session:
            return authenticate(session, token)

    key = await run_in_threadpool(check)
    if key is None:
        raise ApiError("unauthenticated", "unknown, revoked or expired API key")
    request.scope.setdefault("state", {})["key_prefix"] = key.prefix
    return key


async def _deny(
    state: AppState, key: ApiKey, operation: str, gallery: str | None, why: str
) -> None:
    details = {"reason": why, "role": key.role}
    await state.record(key, operation, outcome="denied", gallery=gallery, details=details)
    raise ApiError("forbidden", why)


def require(permission: Permission) -> Callable[..., Awaitable[ApiKey]]:
    """Dependency: a key whose role grants `permission`."""

    async def dependency(
        request: Request,
        state: Annotated[AppState, Depends(get_state)],
        key: Annotated[ApiKey, Depends(current_key)],
    ) -> ApiKey:
        if not allows(key.role, permission):
            why = f"role {key.role!r} may not {permission}"
            await _deny(state, key, f"{request.method} {_route(request)}", None, why)
        return key

    return dependency


def require_gallery(permission: Permission) -> Callable[..., Awaitable[ApiKey]]:
    """Dependency for routes with a `{gallery}` path parameter: permission and scope."""

    async def dependency(
        request: Request,
        gallery: str,
        state: Annotated[AppState, Depends(get_state)],
        key: Annotated[ApiKey, Depends(require(permission))],
    ) -> ApiKey:
        # A scoped key is refused alike whether the gallery is outside its scope or does not
        # exist (a new gallery under a deleted one's name is outside): the answer reveals
        # nothing of galleries the key does not reach.
        if key.scope is not None and not await run_in_threadpool(_reaches, state, key, gallery):
            why = f"this key is not allowed to use gallery {gallery!r}"
            await _deny(state, key, f"{request.method} {_route(request)}", gallery, why)
        return key

    return dependency


def require_unscoped(permission: Permission) -> Callable[..., Awaitable[ApiKey]]:
    """Dependency of service-wide routes, whose answer covers every gallery at once (metrics
    count requests and audit entries of all galleries): a key scoped to galleries is refused."""

    async def dependency(
        request: Request,
        state: Annotated[AppState, Depends(get_state)],
        key: Annotated[ApiKey, Depends(require(permission))],
    ) -> ApiKey:
        if key.scope is not None:
            why = "this covers every gallery: it needs a key not scoped to galleries"
            await _deny(state, key, f"{request.method} {_route(request)}", None, why)
        return key

    return dependency


def _reaches(state: AppState, key: ApiKey, gallery: str) -> bool:
    with state.db.read() as session:
        return reaches(session, key, gallery)


def _route(request: Request) -> str:
    return getattr(request.scope.get("route"), "path", request.url.path)


def require_collection(permission: Permission) -> Callable[..., Awaitable[str]]:
    """Dependency of the CompreFace routes: the gallery the key stands for (a CompreFace "face
    collection" is one gallery: the one the key is scoped to), if its role grants `permission`."""

    async def dependency(key: Annotated[ApiKey, Depends(require(permission))]) -> str:
        if key.scope is None or len(key.scope) != 1:
            raise ApiError(
                "compreface_collection",
                "CompreFace routes act on one face collection: use a key scoped to exactly one "
                "gallery (yingyan keys create --gallery NAME)",
            )
        name = key.scope[0].name  # the name, when the key was read, of the gallery it holds
        if name is None:
            raise ApiError("not_found", "the face collection of this key has been deleted")
        return name

    return dependency
