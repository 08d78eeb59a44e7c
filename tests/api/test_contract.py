"""Schemathesis generates requests from GET /openapi.json: no input may produce a server error,
and every response must match the documented status codes, content types and schemas."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx

from tests.api.serving import RELOAD_TOKEN, Api
from tests.conftest import BIN

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)


def test_generated_requests_find_no_server_error_and_match_the_schema(
    served_api: Api, tmp_path: Path
) -> None:
    run = subprocess.run(
        [
            str(BIN / "st"),
            "run",
            f"{served_api.url}/openapi.json",
            "--checks",
            CHECKS,
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


def test_every_operation_has_a_stable_id_and_a_description(served_api: Api) -> None:
    document = httpx.get(f"{served_api.url}/openapi.json", timeout=10).json()
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
    }
    undocumented = [name for name, op in operations.items() if not op.get("description")]
    assert undocumented == []
