"""A small client of the platform's REST API, with one exception per state the UI explains.

The address comes from `readmission.config.get_settings().api_url` (env API_URL).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from readmission.config import get_settings

Json = dict[str, Any]


class ApiError(RuntimeError):
    """The API refused a request; the message says why, ready to show to a person."""


class ApiUnavailable(ApiError):
    """Nothing answers at API_URL (not started, crashed, or a wrong address)."""


class NoModelPromoted(ApiError):
    """The API runs but serves no model: none is in production yet (or it is still loading)."""


class InvalidEncounter(ApiError):
    """The API rejected an encounter (422); the message names the fields."""


class BatchTooLarge(ApiError):
    """More rows than the API's MAX_BATCH_ROWS in one request (413)."""


class ApiClient:
    """Calls of the REST API the UI needs, returning its JSON answers as dicts."""

    def __init__(self, base_url: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = (base_url or get_settings().api_url).rstrip("/")
        self.timeout = httpx.Timeout(timeout, connect=3.0)

    def ready(self) -> Json:
        """`{"ready": true, "model_version": ...}` or `{"ready": false, "reason": ...}`."""
        return self._request("GET", "/ready", ok=(200, 503))

    def predict(self, encounter: Mapping[str, Any], explain: bool = False) -> Json:
        params = {"explain": "true"} if explain else None
        return self._request("POST", "/predict", json=dict(encounter), params=params)

    def predict_batch(self, encounters: Sequence[Mapping[str, Any]]) -> Json:
        return self._request(
            "POST", "/predict/batch", json={"encounters": [dict(e) for e in encounters]}
        )

    def predict_many(self, encounters: Sequence[Mapping[str, Any]], chunk_rows: int) -> list[Json]:
        """Predictions for any number of encounters, in requests of at most `chunk_rows`."""
        predictions: list[Json] = []
        for start in range(0, len(encounters), chunk_rows):
            predictions += self.predict_batch(encounters[start : start + chunk_rows])["predictions"]
        return predictions

    def model(self) -> Json:
        """The production model the API serves, its metrics and its loading state."""
        return self._request("GET", "/model")

    def card(self) -> Json:
        """The served version's model card (404: trained before cards were written)."""
        return self._request("GET", "/model/card")

    def performance(self) -> Json | None:
        """Realized performance per served version (GET /performance); None before the first
        computation."""
        body = self._request("GET", "/performance", ok=(200, 404), unavailable=ApiError)
        return body if "versions" in body else None

    def history(self) -> Json:
        """Every registered version of the model, oldest first, with holdout metrics."""
        return self._request("GET", "/model/history", unavailable=ApiError)  # 503: no registry

    def _request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        unavailable: type[ApiError] = NoModelPromoted,
        **kwargs: Any,
    ) -> Json:
        url = f"{self.base_url}{path}"
        try:
            response = httpx.request(method, url, timeout=self.timeout, **kwargs)
        except httpx.TransportError as error:
            raise ApiUnavailable(
                f"The API at {self.base_url} does not answer ({error or type(error).__name__})."
            ) from error
        if response.status_code not in ok:
            raise _error_for(response, unavailable)
        try:
            return response.json()
        except ValueError as error:
            raise ApiError(
                f"{url} answered {response.status_code} with something other than "
                "JSON: is API_URL the readmission API?"
            ) from error


def _error_for(response: httpx.Response, unavailable: type[ApiError]) -> ApiError:
    message = error_message(response)
    kind = {503: unavailable, 422: InvalidEncounter, 413: BatchTooLarge}.get(
        response.status_code, ApiError
    )
    if kind is ApiError:
        request = response.request
        message = f"{request.method} {request.url.path} answered {response.status_code}: {message}"
    return kind(message)


def error_message(response: httpx.Response) -> str:
    """The human part of an error answer: FastAPI's `detail` (text or field errors) or a reason."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)
    detail = body.get("detail", body.get("reason", body.get("message")))
    if isinstance(detail, list):
        return "; ".join(_field_error(item) for item in detail)
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("reason") or detail)
    return str(detail) if detail is not None else str(body)


def _field_error(item: Any) -> str:
    """One field problem: the API's `{field, problem, allowed}` or FastAPI's `{loc, msg}`."""
    if not isinstance(item, dict):
        return str(item)
    if "field" in item:
        allowed = f" (allowed: {item['allowed']})" if item.get("allowed") else ""
        return f"{item['field']}: {item.get('problem', 'invalid')}{allowed}"
    location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    return f"{location}: {item.get('msg', item)}" if location else str(item.get("msg", item))
