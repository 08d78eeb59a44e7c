"""The Grafana provisioning and dashboards: parseable, stable uids, every panel query an expr on
the provisioned Prometheus data source, and every metric of the API contract on a dashboard."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.monitoring.monitoring_files import (
    DASHBOARDS,
    DATASOURCE_UID,
    GRAFANA_DIR,
    PROVISIONING,
    annotation_queries,
    load_dashboard,
    panel_queries,
    panels,
)

CONTRACT_METRICS = {
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "http_requests_inprogress",
    "readmission_predictions_total",
    "readmission_prediction_probability_bucket",
    "readmission_model_info",
    "readmission_model_version",
    "readmission_model_loaded",
    "readmission_model_load_failures_total",
    "readmission_model_load_failing",
    "readmission_model_reloads_total",
    "readmission_registry_up",
    "readmission_model_last_reload_timestamp_seconds",
    "readmission_model_registered_timestamp_seconds",
    "readmission_batch_rows_bucket",
    "readmission_validation_errors_total",
    "readmission_feature_psi",
    "readmission_drift_window_requests",
    "readmission_drift_min_requests",
    "readmission_prediction_log_written_total",
    "readmission_prediction_log_dropped_total",
    "readmission_prediction_log_buffered",
    "readmission_realized_roc_auc",
    "readmission_realized_labelled_encounters",
    "readmission_realized_pending_encounters",
    "readmission_estimated_roc_auc",
    "readmission_holdout_roc_auc",
    "readmission_realized_min_auc",
    "readmission_live_delta_roc_auc",
    "readmission_live_delta_roc_auc_lower",
    "readmission_live_delta_roc_auc_upper",
    "readmission_live_paired_outcomes",
}
PANELS_WITHOUT_QUERIES = {"alertlist", "row", "text"}


def test_provisioning_files_parse_and_each_declares_api_version_1() -> None:
    kinds: set[str] = set()
    for path in PROVISIONING:
        document = yaml.safe_load(path.read_text())
        assert document["apiVersion"] == 1, path
        kinds.update(key for key in document if key != "apiVersion")
    assert {"datasources", "providers"} <= kinds


def test_the_prometheus_datasource_has_the_uid_the_dashboards_use_and_its_url_from_env() -> None:
    sources = [
        source
        for path in (GRAFANA_DIR / "provisioning" / "datasources").glob("*.yaml")
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    (prometheus,) = [source for source in sources if source["type"] == "prometheus"]
    assert prometheus["uid"] == DATASOURCE_UID
    assert prometheus["url"] == "${PROMETHEUS_URL}"
    assert all(re.fullmatch(r"\$\{[A-Z_]+\}", source["url"]) for source in sources)


def test_the_dashboard_provider_loads_json_files_from_a_directory() -> None:
    (path,) = (GRAFANA_DIR / "provisioning" / "dashboards").glob("*.yaml")
    (provider,) = yaml.safe_load(path.read_text())["providers"]
    assert provider["type"] == "file"
    assert Path(provider["options"]["path"]).is_absolute()


def test_dashboards_are_json_with_unique_stable_uids_and_titles() -> None:
    boards = [load_dashboard(path) for path in DASHBOARDS]
    uids = [board["uid"] for board in boards]
    assert {"readmission-api", "readmission-model", "readmission-alerts"} <= set(uids)
    assert len(uids) == len(set(uids))
    assert len({board["title"] for board in boards}) == len(boards)
    assert all(re.fullmatch(r"[a-z0-9-]{1,40}", uid) for uid in uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_each_panel_has_a_unique_id_a_position_and_queries_unless_it_needs_none(path: Path) -> None:
    board = load_dashboard(path)
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), panel["title"]
        if panel["type"] not in PANELS_WITHOUT_QUERIES:
            assert panel["targets"], panel["title"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


@pytest.mark.parametrize("query", panel_queries() + annotation_queries(), ids=str)
def test_each_query_has_an_expr_on_the_provisioned_prometheus_by_uid(query) -> None:
    assert query.expr.strip()
    assert query.datasource == {"type": "prometheus", "uid": DATASOURCE_UID}


def test_every_metric_of_the_api_contract_is_on_a_dashboard() -> None:
    exprs = " ".join(query.expr for query in panel_queries())
    used = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", exprs))
    assert CONTRACT_METRICS - used == set()
