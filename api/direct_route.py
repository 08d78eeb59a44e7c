"""Routes whose handler takes the request and returns the response itself, for the hot path.

FastAPI runs every request of an `APIRoute` through its parameter machinery
(`solve_dependencies`, the response model, two exit stacks for dependencies with `yield`),
even when the handler only takes the `Request`: about a third of the CPU a `POST /predict`
spent in this process (bench/serving_profile.py). The scoring handlers read their body and
query themselves, so `DirectRoute` calls them the way Starlette calls a plain route, while
FastAPI still documents them (path, summary, `response_model`, `responses`, `openapi_extra`) and
the app's exception handlers still answer what they raise (HTTPException, RequestValidationError).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import request_response


class DirectRoute(APIRoute):
    """An APIRoute served by `starlette.routing.request_response(endpoint)`: the endpoint must be
    `async def handler(request: Request) -> Response` with no dependencies."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        parameters = list(inspect.signature(endpoint).parameters.values())
        if (
            not inspect.iscoroutinefunction(endpoint)
            or len(parameters) != 1
            or kwargs.get("dependencies")
        ):
            raise TypeError(
                f"{endpoint.__qualname__}: a DirectRoute handler is `async def "
                "handler(request: Request) -> Response` without dependencies"
            )
        super().__init__(path, endpoint, **kwargs)
        self.app = request_response(endpoint)
