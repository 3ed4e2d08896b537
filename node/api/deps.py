"""Dependencies shared by routes: the node context, a store session, the caller's API key and role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from node.api.errors import ApiError
from node.auth.apikeys import InvalidApiKey, KeyInfo, Role, authenticate
from node.runtime import NodeContext

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="An API key from `alliance apikey create --role ROLE`.")


def get_node(request: Request) -> NodeContext:
    node: NodeContext = request.app.state.node
    return node


NodeDep = Annotated[NodeContext, Depends(get_node)]


def get_session(node: NodeDep) -> Iterator[Session]:
    with node.store.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def current_key(session: SessionDep, token: Annotated[str | None, Depends(_api_key_header)]) -> KeyInfo:
    if not token:
        raise ApiError(401, "unauthorized", "an X-API-Key header is required")
    try:
        return authenticate(session, token)
    except InvalidApiKey as exc:
        raise ApiError(401, "unauthorized", str(exc)) from exc


CurrentKey = Annotated[KeyInfo, Depends(current_key)]


def refuse_nul_characters(request: Request) -> None:
    """Refuse a NUL character in the path or query: no identifier holds one, and PostgreSQL cannot even compare
    text with one (it would answer 500 where SQLite answers 404)."""
    if "\x00" in request.scope["path"] or any("\x00" in k + v for k, v in request.query_params.multi_items()):
        raise ApiError(422, "invalid_characters", "the path or query holds a NUL character")


def require_roles(*roles: Role) -> Callable[[KeyInfo], KeyInfo]:
    """A dependency admitting only keys with one of `roles`.

    Strict least privilege: an operator key runs the node but does not, say, report fraud, unless
    the route lists the operator role.
    """
    allowed = set(roles)

    def check(key: CurrentKey) -> KeyInfo:
        if key.role not in allowed:
            raise ApiError(403, "forbidden",
                           f"the {key.role} role may not do this; needs {' or '.join(sorted(allowed))}")
        return key

    return check
