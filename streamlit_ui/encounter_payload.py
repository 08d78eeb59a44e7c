"""An encounter's API payload, checked with the shared `Encounter` model before it is sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from readmission.schema import SPECS, Encounter, allowed


def from_record(record: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """The API payload for `record` (data set column names), or the reasons it is invalid."""
    try:
        # Lax: a CSV row holds text ("3"); the API takes JSON integers only.
        encounter = Encounter.model_validate(dict(record), strict=False)
    except ValidationError as error:
        return None, [_reason(e) for e in error.errors(include_url=False)]
    return encounter.model_dump(by_alias=True, exclude_none=True), []


def _reason(error: Mapping[str, Any]) -> str:
    """One sentence naming the field and what it accepts, as the ingest validation words it."""
    field = str(error["loc"][0]) if error["loc"] else "row"
    if error["type"] == "missing":
        return f"{field} is missing"
    if error["type"] == "extra_forbidden":
        return f"{field} is not a column of the data set"
    if field in SPECS:
        return f"{field} must be {allowed(field)}, got {error['input']!r}"
    return f"{field}: {error['msg']}, got {error['input']!r}"
