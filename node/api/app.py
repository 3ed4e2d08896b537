"""The FastAPI application of one node."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from node.api.access_log import AccessLog, RouteTemplates
from node.api.deps import caller_refusal, current_key, refuse_nul_characters
from node.api.error_schema import ERROR_RESPONSES
from node.api.errors import install_error_handlers
from node.api.limits import BodySizeLimit
from node.api.routes import checks, fraud, health, indicators, members, operations
from node.api.routes.assets import router as assets_router
from node.api.unhandled import UnhandledErrors
from node.extensions.routes import install_extension_routes
from node.runtime import NodeContext
from node.workers import BackgroundWorkers

API_VERSION = "0.1.0"


def create_app(node: NodeContext, *, workers: BackgroundWorkers | None = None) -> FastAPI:
    """The app of `node`; `workers` are the node's background loops, shown by /health when given."""
    app = FastAPI(title="Alliance node", version=API_VERSION, openapi_url="/openapi.json",
                  description="Shared fraud intelligence and ABS asset provenance for a consortium of banks.")
    app.state.node = node
    app.state.workers = workers
    install_error_handlers(app, caller_refusal=caller_refusal)
    app.add_middleware(BodySizeLimit, max_bytes=node.settings.max_request_bytes)
    # Added last, so outermost: it logs the 413s BodySizeLimit answers too, under the route the app has for them
    # (read from the app's OpenAPI document, complete once a request comes).
    app.add_middleware(AccessLog, templates=RouteTemplates(app.openapi))
    # Outermost of all: a failure no handler maps is answered 500 with a reference and logged without its message
    # (which may quote customer data), instead of raised on to Starlette and uvicorn, which log it whole.
    app.add_middleware(UnhandledErrors)
    app.include_router(health.router)
    # Every /v1 route needs an API key; routes narrow it to roles where they must.
    v1 = [Depends(current_key), Depends(refuse_nul_characters)]
    for router in (members.router, fraud.router, checks.router, indicators.router, operations.router, assets_router):
        app.include_router(router, prefix="/v1", dependencies=v1, responses=ERROR_RESPONSES)
    # applications, alerts, marketing, plugins
    install_extension_routes(app, node, dependencies=v1, responses=ERROR_RESPONSES)
    return app
