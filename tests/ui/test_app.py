"""The Streamlit app run by AppTest in-process, against the real API (bin/api) or none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from readmission.config import Settings
from readmission.data.dataset import synthetic_sample
from readmission.schema import FEATURES, SPECS, Integer, example_encounter
from streamlit_ui import encounter_payload
from streamlit_ui.encounter_form import widget_key
from streamlit_ui.explanations import factor
from tests.services import ROOT
from tests.ui.conftest import PRODUCTION_VERSION

APP = ROOT / "streamlit_ui" / "app.py"
PAGES = ("views/predict.py", "views/batch.py", "views/model.py")


def open_page(page: str = "views/predict.py") -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60).run()
    if page != "views/predict.py":
        app.switch_page(page).run()
    assert not app.exception, app.exception
    return app


def widget(app: AppTest, column: str) -> Any:  # a SelectBox, NumberInput or TextInput
    key = widget_key(column)
    for kind in (app.selectbox, app.number_input, app.text_input):
        found = [w for w in kind if w.key == key]
        if found:
            return found[0]
    raise LookupError(column)


def submit(app: AppTest, **values: object) -> AppTest:
    for column, value in values.items():
        widget(app, column).set_value(value)
    app.form_submit_button[0].click().run()
    assert not app.exception, app.exception
    return app


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def test_the_form_offers_every_model_input_with_the_schemas_default(
    ui_against: Callable[[str], Settings], down_api_url: str
) -> None:
    ui_against(down_api_url)
    app = open_page()

    defaults = example_encounter()
    assert {column: widget(app, column).value for column in FEATURES} == defaults
    for column, spec in SPECS.items():
        if isinstance(spec, Integer) and not spec.codes:
            number = widget(app, column)
            assert (number.min, number.max) == (spec.low, spec.high), column
        elif isinstance(spec, Integer):
            assert widget(app, column).options[0].startswith(f"{spec.low} · "), column


@pytest.mark.parametrize("page", PAGES)
def test_every_page_explains_an_unreachable_api_with_its_url_and_how_to_start_it(
    page: str, ui_against: Callable[[str], Settings], down_api_url: str
) -> None:
    ui_against(down_api_url)
    app = open_page(page)

    [message] = [e.value for e in app.error]
    assert "The API is not reachable" in message
    assert f"API_URL = `{down_api_url}`" in message
    assert "`bin/api`" in message and "`make demo`" in message


def test_submitting_while_the_api_is_down_says_so_next_to_the_form(
    ui_against: Callable[[str], Settings], down_api_url: str
) -> None:
    ui_against(down_api_url)
    app = submit(open_page())

    assert [e.value for e in app.error if "The API is not reachable" in e.value]
    assert not app.metric


def test_an_invalid_diagnosis_code_is_refused_naming_the_field_before_anything_is_sent(
    ui_against: Callable[[str], Settings], down_api_url: str
) -> None:
    ui_against(down_api_url)
    app = submit(open_page(), diag_2="25O.1")

    [message] = [e.value for e in app.error]
    assert "Fix these fields" in message
    assert "diag_2 must be a value matching" in message and "'25O.1'" in message


@pytest.mark.slow
def test_the_submitted_form_shows_the_apis_probability_band_version_and_contributions(
    served_url: str, ui_against: Callable[[str], Settings]
) -> None:
    ui_against(served_url)
    changes = {
        "age": "[80-90)",
        "number_inpatient": 3,
        "discharge_disposition_id": 3,
        "diag_1": "410",
    }
    app = submit(open_page(), **changes)

    expected = httpx.post(
        f"{served_url}/predict", params={"explain": "true"}, json={**example_encounter(), **changes}
    ).json()
    assert metric(app, "Risk of readmission within 30 days") == f"{expected['probability']:.1%}"
    assert expected["risk_band"].capitalize() in metric(app, "Risk band")
    assert metric(app, "Model version") == f"v{PRODUCTION_VERSION}"
    shown = app.dataframe[0].value
    assert list(shown["factor"]) == [
        factor(c["field"], c["value"]) for c in expected["contributions"]
    ]
    assert "Primary diagnosis 410 (circulatory system)" in list(shown["factor"])
    assert "Inpatient visits (prior year): 3" in list(shown["factor"])
    assert list(shown["logit"]) == pytest.approx([c["logit"] for c in expected["contributions"]])
    assert not app.error and not app.warning


@pytest.mark.slow
def test_pages_without_a_promoted_model_say_how_to_promote_one(
    idle_url: str, ui_against: Callable[[str], Settings]
) -> None:
    ui_against(idle_url)

    for page in PAGES:
        app = open_page(page)
        [message] = [w.value for w in app.warning]
        assert "No model is being served yet" in message, page
        assert "`readmission promote <version>`" in message, page
    assert any("No version is registered yet" in i.value for i in app.info)


@pytest.mark.slow
def test_a_batch_upload_lists_the_bad_row_and_scores_the_good_ones_in_chunks(
    served_url: str, ui_against: Callable[[str], Settings]
) -> None:
    settings = ui_against(served_url)
    rows = synthetic_sample(20, seed=11)
    assert len(rows) > 2 * settings.max_batch_rows  # three requests at least
    rows.loc[3, "A1Cresult"] = "high"
    app = open_page("views/batch.py")

    app.file_uploader[0].set_value(
        ("encounters.csv", rows.to_csv(index=False).encode(), "text/csv")
    ).run()
    bad = app.dataframe[0].value
    assert list(bad["row"]) == [4]
    assert bad["reason"].iloc[0].startswith("A1Cresult must be one of 'None', 'Norm'")
    app.button[0].click().run()

    assert not app.exception and not app.error
    scored = app.dataframe[-1].value
    good = rows.drop(index=3)
    assert list(scored.index) == [n for n in range(1, 21) if n != 4]
    assert list(scored["encounter_id"]) == list(good["encounter_id"])
    payload, _ = encounter_payload.from_record(good.iloc[-1][list(FEATURES)].to_dict())
    expected = httpx.post(f"{served_url}/predict", json=payload)
    assert scored["probability"].iloc[-1] == pytest.approx(expected.json()["probability"])
    assert set(scored["model_version"]) == {PRODUCTION_VERSION}
    assert app.get("download_button")


def test_an_upload_without_the_data_sets_columns_is_refused_naming_them(
    ui_against: Callable[[str], Settings], down_api_url: str
) -> None:
    ui_against(down_api_url)
    rows = synthetic_sample(3, seed=1).drop(columns=["diag_1", "A1Cresult"])
    app = open_page("views/batch.py")

    app.file_uploader[0].set_value(
        ("admissions.csv", rows.to_csv(index=False).encode(), "text/csv")
    ).run()

    [message] = [e.value for e in app.error]
    assert message.startswith("**admissions.csv**: the file lacks the columns diag_1, A1Cresult")
    assert not app.button


@pytest.mark.slow
def test_the_model_page_shows_the_production_version_and_every_trained_version(
    served_url: str, ui_against: Callable[[str], Settings]
) -> None:
    ui_against(served_url)
    app = open_page("views/model.py")

    assert not app.error and not app.warning
    assert metric(app, "Production version") == f"v{PRODUCTION_VERSION}"
    history = httpx.get(f"{served_url}/model/history").json()["versions"]
    (table,) = [d.value for d in app.dataframe if "role" in d.value.columns]
    assert list(table["version"]) == [v["version"] for v in history] == ["1", "2"]
    assert list(table["role"]) == ["production", ""]
    assert list(table["holdout_roc_auc"]) == pytest.approx([v["holdout_roc_auc"] for v in history])
    calibration, realized, auc, log_loss = (
        chart.proto.spec for chart in app.get("vega_lite_chart")
    )
    assert "observed_rate" in calibration and "ROC AUC" in realized
    assert "holdout_roc_auc" in auc and "holdout_log_loss" in log_loss


@pytest.mark.slow
def test_the_model_page_renders_the_served_versions_card(
    served_url: str, ui_against: Callable[[str], Settings]
) -> None:
    ui_against(served_url)
    app = open_page("views/model.py")
    card = httpx.get(f"{served_url}/model/card").json()

    low, high = card["holdout"]["roc_auc_ci"]
    assert (
        metric(app, "ROC-AUC (95% CI)")
        == f"{card['holdout']['roc_auc']:.3f} ({low:.3f}-{high:.3f})"
    )
    assert metric(app, "Calibration slope") == f"{card['calibration']['slope']:.2f}"
    assert [t.label for t in app.tabs] == ["Race", "Gender", "Age band"]
    subgroup_tables = [d.value for d in app.dataframe if "group" in d.value.columns]
    assert [int(t["n"].sum()) for t in subgroup_tables] == [card["holdout"]["n"]] * 3


@pytest.mark.slow
def test_the_model_page_shows_realized_beside_holdout_performance_and_the_pending_count(
    served_url: str, ui_against: Callable[[str], Settings]
) -> None:
    ui_against(served_url)
    app = open_page("views/model.py")

    report = httpx.get(f"{served_url}/performance").json()
    (served,) = report["versions"]
    realized = next(d.value for d in app.dataframe if "holdout AUC" in d.value.columns)
    assert list(realized["version"]) == [PRODUCTION_VERSION]
    assert (realized["labelled"].iloc[0], realized["pending"].iloc[0]) == (200, 0)
    assert realized["realized AUC"].iloc[0] == pytest.approx(served["roc_auc"])
    assert realized["holdout AUC"].iloc[0] == pytest.approx(served["holdout_roc_auc"])
    assert "estimated AUC (pending)" in realized.columns
    assert any("ROC AUC" in chart.proto.spec for chart in app.get("vega_lite_chart"))
