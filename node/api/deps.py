"""Dependencies shared by routes: the node context, a store session, the caller's API key and role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session
from starlette.convertors import Convertor, register_url_convertor

from node.api.errors import ApiError
from node.auth.apikeys import InvalidApiKey, KeyInfo, Role, authenticate
from node.runtime import NodeContext

# Where a paged list's cursor goes when the body stays what it was before paging (a STIX bundle, a plain list): the
# value to pass as `after` for the next page, absent on the last page.
NEXT_PAGE_HEADER = "X-Next-After"
# On every STIX export page: the `changed_since_block` of the next incremental pull (node.ledger.stix.export_page),
# the block after the one the mirror held when the page was read.
NEXT_CHANGED_SINCE_HEADER = "X-Next-Changed-Since-Block"

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="An API key from `alliance apikey create --role ROLE`.")


class AnyTextConvertor(Convertor[str]):
    """`{name:text}`: a path parameter that may hold "/" (Starlette's `path` may too, but stops at a newline), so that a
    name the node takes elsewhere reaches the node's own checks (refused with their code, or found) instead of
    routing's 404."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("text", AnyTextConvertor())


def get_node(request: Request) -> NodeContext:
    node: NodeContext = request.app.state.node
    return node


NodeDep = Annotated[NodeContext, Depends(get_node)]


def get_session(node: NodeDep) -> Iterator[Session]:
    with node.store.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def _authenticated(session: Session, token: str | None) -> KeyInfo:
    if not token:
        raise ApiError(401, "unauthorized", "an X-API-Key header is required")
    try:
        return authenticate(session, token)
    except InvalidApiKey as exc:
        raise ApiError(401, "unauthorized", str(exc)) from exc


def _bearer_token(request: Request) -> str | None:
    # What scrapers and HTTP clients that know no custom header send (Prometheus' `authorization`), accepted as
    # the same API key.
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def current_key(request: Request, session: SessionDep,
                token: Annotated[str | None, Depends(_api_key_header)]) -> KeyInfo:
    key = _authenticated(session, token or _bearer_token(request))
    request.state.api_key = key  # spares caller_refusal a second look-up
    return key


CurrentKey = Annotated[KeyInfo, Depends(current_key)]


def refuse_nul_characters(request: Request) -> None:
    """Refuse a NUL character in the path or query: no identifier holds one, and PostgreSQL cannot even compare
    text with one (it would answer 500 where SQLite answers 404)."""
    if "\x00" in request.scope["path"] or any("\x00" in k + v for k, v in request.query_params.multi_items()):
        raise ApiError(422, "invalid_characters", "the path or query holds a NUL character")


# Each dependency made by require_roles, with the roles it admits: caller_refusal finds a route's roles here.
_ROLE_CHECKS: dict[Callable[..., KeyInfo], frozenset[Role]] = {}


def require_roles(*roles: Role) -> Callable[[KeyInfo], KeyInfo]:
    """A dependency admitting only keys with one of `roles`.

    Strict least privilege: an operator key runs the node but does not, say, report fraud, unless
    the route lists the operator role.
    """
    allowed = frozenset(roles)

    def check(key: CurrentKey) -> KeyInfo:
        _require_role(key, allowed)
        return key

    _ROLE_CHECKS[check] = allowed
    return check


def _require_role(key: KeyInfo, allowed: frozenset[Role]) -> None:
    if key.role not in allowed:
        raise ApiError(403, "forbidden", f"the {key.role} role may not do this; needs {' or '.join(sorted(allowed))}")


def roles_of(dependant: Dependant) -> frozenset[Role] | None:
    """The roles a route with this dependency tree admits (its `require_roles` check, at any depth); None when it
    has no role check, so that any valid key reaches it."""
    for sub in dependant.dependencies:
        roles = _ROLE_CHECKS.get(sub.call) if sub.call is not None else None
        if roles is None:
            roles = roles_of(sub)
        if roles is not None:
            return roles
    return None


def caller_refusal(request: Request) -> ApiError | None:
    """How the key and role checks refuse this /v1 request, if they do; for a request refused before they ran.

    FastAPI parses a JSON body before it runs any dependency, and the router's NUL check runs before a route's
    role check: without this, a caller with no key, or the wrong role, would be told how its body or path is
    bad (422, 400) instead of 401 or 403.
    """
    if not request.scope["path"].startswith("/v1/"):
        return None
    route = request.scope.get("route")
    roles = roles_of(route.dependant) if isinstance(route, APIRoute) else None
    try:
        key = getattr(request.state, "api_key", None)
        if key is None:
            with get_node(request).store.session() as session:
                key = _authenticated(session, request.headers.get("X-API-Key") or _bearer_token(request))
        if roles is not None:
            _require_role(key, roles)
    except ApiError as refusal:
        return refusal
    return None
