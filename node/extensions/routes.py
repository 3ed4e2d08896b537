"""Mounting the API routes that extensions contribute (`alliance_api_routers`) under /v1."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI

from node.extensions.manager import extensions_for

logger = logging.getLogger(__name__)


def install_extension_routes(app: FastAPI, node: Any, *, dependencies: Sequence[Any]) -> list[str]:
    """Include every contributed router behind `dependencies` (the API-key check); returns the mounting modules.

    A module whose hook fails, or answers with something other than routers, contributes nothing (logged).
    """
    outcome = extensions_for(node).call("alliance_api_routers", expect=list)
    mounted = []
    for module, routers in outcome.results:
        if not all(isinstance(r, APIRouter) for r in routers):
            logger.warning("extension %s: alliance_api_routers answered something other than APIRouters", module)
            continue
        for router in routers:
            app.include_router(router, prefix="/v1", dependencies=list(dependencies))
        mounted.append(module)
    return mounted
