"""Error responses: a 422 that names each bad field and what it accepts, and never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.bodies import FieldProblem
from api.metrics import ServingMetrics
from readmission.schema import FEATURE_COLUMNS, ID_COLUMNS, ID_MAX, ID_MIN, allowed, field_name

log = logging.getLogger(__name__)
# A request field (column name or its Python alias) -> the data set column it stands for.
FIELD_TO_COLUMN = {
    **{s.name: s.name for s in FEATURE_COLUMNS},
    **{field_name(s.name): s.name for s in FEATURE_COLUMNS},
}
UNKNOWN = "the encounter's columns only: see the Encounter schema at /docs"
OTHER_FIELDS = {
    "": "a JSON object: one encounter, keyed by the data set's column names",
    "encounters": "a JSON list of encounters",
    "explain": "true or false",
    "by_feature": "true or false",
    **{c: f"an integer from {ID_MIN} to {ID_MAX} (64-bit), or null" for c in ID_COLUMNS},
}


def describe(error: dict[str, Any]) -> tuple[FieldProblem, str]:
    """One pydantic error as a problem a person can act on, and its metric label."""
    loc: Sequence[Any] = error.get("loc", ())
    if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
        loc = loc[1:]
    kind, problem = error.get("type", ""), str(error.get("msg", "invalid value"))
    if kind == "json_invalid":
        return FieldProblem(
            field="body",
            problem=f"the body is not valid JSON ({problem})",
            allowed=OTHER_FIELDS[""],
        ), "body"
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"
    name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if kind == "extra_forbidden":
        return FieldProblem(field=path, problem="unknown field", allowed=UNKNOWN), "unknown_field"
    if name in FIELD_TO_COLUMN:
        column = FIELD_TO_COLUMN[name]
        return FieldProblem(field=path, problem=problem, allowed=allowed(column)), column
    label = name if name in OTHER_FIELDS else "body"
    return FieldProblem(field=path, problem=problem, allowed=OTHER_FIELDS.get(name)), label


def install(app: FastAPI, metrics: ServingMetrics) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            problem, label = describe(error)
            metrics.validation_errors.labels(label).inc()
            problems.append(problem.model_dump())
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "internal error; it was logged on the server"}, status_code=500
        )
