"""Fixtures of the API tests: bin/api serving a promoted version of a trained lineage, and the
same app in process for the tests about what it answers rather than how the server runs."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from readmission import registry
from readmission.config import Settings
from tests.api.serving import Api, AppApi, app_api, running_api
from tests.conftest import copy_lineage

SERVED_VERSION = "2"


@pytest.fixture(scope="package")
def served_api(
    trained_lineage: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    """bin/api serving version 2 of a copy of the lineage, shared by the API tests."""
    settings = copy_lineage(trained_lineage)
    registry.promote(settings, SERVED_VERSION)
    # As deployed: webhooks on, so the contract test reaches their signature check.
    with running_api(
        settings, tmp_path_factory.mktemp("api"), MLFLOW_WEBHOOK_SECRET=secrets.token_urlsafe(24)
    ) as api:
        api.wait_until(lambda: api.get("/ready").status_code == 200, "the model to be served")
        yield api


@pytest.fixture(scope="package")
def in_process_api(
    trained_lineage: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppApi]:
    """create_app serving version 2 of a copy of the lineage in this process, configured like
    `served_api`: for validation, scoring and the OpenAPI document."""
    settings = copy_lineage(trained_lineage)
    registry.promote(settings, SERVED_VERSION)
    with app_api(settings, tmp_path_factory.mktemp("app") / "home") as api:
        api.wait_until(lambda: api.get("/ready").status_code == 200, "the model to be served")
        yield api
