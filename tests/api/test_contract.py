"""Schemathesis generates requests from GET /openapi.json and runs all its checks: no input may
produce a server error, every response must match the documented status codes, content types and
schemas, valid data must be accepted and invalid data rejected."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from readmission.schema import example_encounter
from tests.api.serving import RELOAD_TOKEN, Api, AppApi
from tests.services import BIN

pytestmark = pytest.mark.slow

# 413 is how the API refuses a batch over MAX_BATCH_ROWS (the schema's maxItems) or a body over
# its size limit, documented on both routes: a rejection like 422 for schemathesis' negative cases.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429", "5xx"]
"""


def test_generated_requests_find_no_server_error_and_match_the_schema(
    served_api: Api, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    run = subprocess.run(
        [
            str(BIN / "st"),
            "--config-file",
            str(config),
            "run",
            f"{served_api.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--seed",
            "20240",
            "--no-color",
            "--request-timeout",
            "20",
            "--header",
            f"Authorization: Bearer {RELOAD_TOKEN}",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    print(run.stdout[-3000:])

    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    (report,) = tmp_path.glob("junit-*.xml")
    cases = {case.get("name"): case for case in ET.parse(report).iter("testcase")}
    assert {
        "POST /predict",
        "POST /predict/batch",
        "GET /model",
        "GET /model/history",
        "POST /model/reload",
        "GET /ready",
        "GET /health",
    } <= set(cases)
    assert not any(len(case) for case in cases.values()), "a failure or error was reported"


def test_every_operation_has_a_stable_id_and_a_description(in_process_api: AppApi) -> None:
    document = in_process_api.get("/openapi.json").json()
    operations = {
        f"{method.upper()} {path}": operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    assert {name: op["operationId"] for name, op in operations.items()} == {
        "POST /predict": "predict",
        "POST /predict/batch": "predict_batch",
        "GET /model": "model_info",
        "GET /model/history": "model_history",
        "GET /model/card": "model_card",
        "POST /model/reload": "reload_model",
        "GET /performance": "realized_performance",
        "GET /ready": "ready",
        "GET /health": "health",
        "POST /webhooks/mlflow": "mlflow_webhook",
    }
    undocumented = [name for name, op in operations.items() if not op.get("description")]
    assert undocumented == []


def test_an_integral_number_is_an_integer_but_true_and_a_fraction_are_not(
    in_process_api: AppApi,
) -> None:
    encounter = {**example_encounter(), "encounter_id": 7, "num_procedures": 3}
    as_written = in_process_api.post("/predict", json=encounter)
    # What pandas' to_json writes for an integer column with gaps; JSON Schema's `integer` too.
    integral = in_process_api.post(
        "/predict", json={**encounter, "encounter_id": 7.0, "num_procedures": 3.0}
    )
    assert as_written.status_code == integral.status_code == 200, integral.text
    assert integral.json() == as_written.json()  # the id echoed as 7, the same probability
    for value in (True, 3.5, "3"):
        refused = in_process_api.post("/predict", json={**encounter, "num_procedures": value})
        assert refused.status_code == 422, value
        (problem,) = refused.json()["detail"]
        assert (problem["field"], problem["allowed"]) == (
            "num_procedures",
            "an integer from 0 to 20",
        )


def test_413_is_documented_on_both_routes(in_process_api: AppApi) -> None:
    document = in_process_api.get("/openapi.json").json()
    for path in ("/predict", "/predict/batch"):
        assert "413" in document["paths"][path]["post"]["responses"]
