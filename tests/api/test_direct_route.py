"""DirectRoute: scoring handlers skip FastAPI's parameter machinery but stay documented and keep
the app's error handling; a handler that needs that machinery is refused at import."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.testclient import TestClient

from api.direct_route import DirectRoute


async def dependency() -> int:
    return 1


def test_a_handler_with_parameters_or_dependencies_is_refused() -> None:
    router = APIRouter(route_class=DirectRoute)

    async def two(request: Request, n: int) -> Response:
        return Response()

    def blocking(request: Request) -> Response:
        return Response()

    async def fine(request: Request) -> Response:
        return Response()

    for handler in (two, blocking):
        with pytest.raises(TypeError, match="DirectRoute handler"):
            router.post("/x")(handler)
    with pytest.raises(TypeError, match="without dependencies"):
        router.post("/y", dependencies=[Depends(dependency)])(fine)


def test_the_route_is_documented_and_its_errors_get_the_apps_handlers() -> None:
    router = APIRouter(route_class=DirectRoute)

    @router.post("/score", summary="Score", responses={503: {"description": "No model"}})
    async def score(request: Request) -> Response:
        """Echo the body, or 503 when asked to."""
        body = await request.body()
        if body == b"fail":
            raise HTTPException(503, detail="no model is served")
        return Response(body, media_type="application/json")

    app = FastAPI()
    app.include_router(router)
    operation = app.openapi()["paths"]["/score"]["post"]
    assert operation["summary"] == "Score" and "503" in operation["responses"]
    client = TestClient(app)
    assert client.post("/score", content=b'{"a": 1}').json() == {"a": 1}
    failed = client.post("/score", content=b"fail")
    assert failed.status_code == 503 and failed.json() == {"detail": "no model is served"}
