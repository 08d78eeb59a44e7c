"""Locust users of the readmission API: realistic encounters, a weighted mix of calls.

Headless, bounded, against a local API (exit code 1 when a threshold below is missed):
    .venv/bin/locust -f locust_test/locustfile.py --headless -u 20 -r 10 -t 20s \
        --host http://127.0.0.1:8000
Web UI at http://127.0.0.1:8089:
    .venv/bin/locust -f locust_test/locustfile.py --web-host 127.0.0.1 --host http://127.0.0.1:8000

Thresholds (environment): LOCUST_MAX_FAILURE_RATIO (default 0.01), LOCUST_MAX_P95_MS (default 500).

Encounters: synthetic ones drawn from the schema's value sets, or, with LOCUST_ENCOUNTERS_CSV set
to a file of the data set (.csv with the header of diabetic_data.csv, or the UCI .zip), its real
records in file order (outcome left out), so the drift panels see real traffic and the
prediction log can later be joined to those encounters' outcomes.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import gevent
import pandas as pd
from locust import FastHttpUser, between, events, task
from locust.env import Environment

from readmission.data.dataset import load, synthetic_sample
from readmission.data.validation import validate
from readmission.schema import TARGET

PAYLOAD_ROWS = 2000
log = logging.getLogger(__name__)


def realistic_encounters(rows: int = PAYLOAD_ROWS, seed: int | None = None) -> list[dict[str, Any]]:
    """Encounters with the data set's columns and value sets (typed as the API expects them)."""
    seed = random.randrange(2**31) if seed is None else seed
    return _requests(synthetic_sample(rows, seed))


def real_encounters(path: str) -> list[dict[str, Any]]:
    """The valid records of a file of the data set, in encounter_id order, without outcomes."""
    return _requests(load(path))


def _requests(raw: pd.DataFrame) -> list[dict[str, Any]]:
    return validate(raw).clean.drop(columns=[TARGET]).to_dict("records")


def _encounters() -> list[dict[str, Any]]:
    path = os.environ.get("LOCUST_ENCOUNTERS_CSV", "").strip()
    return real_encounters(path) if path else realistic_encounters()


ENCOUNTERS = _encounters()
# Importing pandas and building the payloads blocks the gevent loop for seconds, and its cached
# clock would make --run-time end that much early (even at once): bring the clock up to date.
gevent.get_hub().loop.update_now()


class ReadmissionUser(FastHttpUser):
    """A clinician's tool: mostly single scores, some explained, some small batches."""

    host = os.environ.get("API_URL", "http://127.0.0.1:8000")
    wait_time = between(0.05, 0.25)

    @task(10)
    def predict(self) -> None:
        self._score("/predict", random.choice(ENCOUNTERS), "/predict")

    @task(2)
    def predict_explained(self) -> None:
        self._score("/predict?explain=true", random.choice(ENCOUNTERS), "/predict?explain=true")

    @task(2)
    def predict_batch(self) -> None:
        batch = random.sample(ENCOUNTERS, random.randint(5, 25))
        with self.client.post(
            "/predict/batch", json={"encounters": batch}, catch_response=True
        ) as response:
            if _body(response).get("count") != len(batch):
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(1)
    def model_info(self) -> None:
        with self.client.get("/model", catch_response=True) as response:
            if not _body(response).get("version"):
                response.failure(f"{response.status_code}: {response.text[:200]}")

    def _score(self, path: str, encounter: dict[str, Any], name: str) -> None:
        with self.client.post(path, json=encounter, name=name, catch_response=True) as response:
            if not 0.0 <= _body(response).get("probability", -1.0) <= 1.0:
                response.failure(f"{response.status_code}: {response.text[:200]}")


def _body(response: Any) -> dict[str, Any]:
    """The JSON object of a 200 response, else {} (the check that follows fails)."""
    try:
        body = response.json() if response.status_code == 200 else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@events.quitting.add_listener
def enforce_thresholds(environment: Environment, **_: Any) -> None:
    """Exit code 1 when the failure ratio or the 95th percentile latency is over its limit."""
    total = environment.stats.total
    max_failure_ratio = float(os.environ.get("LOCUST_MAX_FAILURE_RATIO", "0.01"))
    max_p95_ms = float(os.environ.get("LOCUST_MAX_P95_MS", "500"))
    p95 = total.get_response_time_percentile(0.95) or 0.0
    problems = []
    if total.num_requests == 0:
        problems.append("no request was made")
    if environment.runner is not None and environment.runner.exceptions:
        problems.append(f"{len(environment.runner.exceptions)} exceptions in the users' code")
    if total.fail_ratio > max_failure_ratio:
        problems.append(f"failure ratio {total.fail_ratio:.2%} > {max_failure_ratio:.2%}")
    if p95 > max_p95_ms:
        problems.append(f"p95 {p95:g} ms > {max_p95_ms:g} ms")
    if problems:
        log.error("load test failed: %s", "; ".join(problems))
        environment.process_exit_code = 1
    else:
        log.info(
            "load test passed: %d requests, failure ratio %.2f%%, p95 %g ms",
            total.num_requests,
            100 * total.fail_ratio,
            p95,
        )
        environment.process_exit_code = 0
