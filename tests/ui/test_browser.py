"""End to end in a browser: Chromium (Playwright) drives bin/ui, which calls the real bin/api."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from readmission.processes import free_port, running
from readmission.schema import example_encounter
from tests.services import ROOT, service_env
from tests.ui.conftest import PRODUCTION_VERSION

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def ui_url(served_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """bin/ui (streamlit run) on a free port, pointed at the served API."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(
        [str(ROOT / "bin" / "ui")],
        tmp_path_factory.mktemp("ui") / "ui.log",
        service_env(API_URL=served_url, UI_PORT=str(port)),
        f"{url}/_stcore/health",
    ):
        yield url


@pytest.fixture
def page() -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-test-tools (Debian's chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 2600})
        finally:
            browser.close()


def choose(page: Page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def wait_until_drawn(page: Page, charts: int) -> None:
    """Charts (Vega SVG) and tables (canvas) are drawn by the browser after their data arrives."""
    # At least `charts`: the Model page adds the card's and the realized-performance charts
    # once the served version has them, which depends on what other tests served before.
    page.get_by_test_id("stVegaLiteChart").locator("svg.marks").nth(charts - 1).wait_for(
        timeout=60_000
    )
    page.get_by_test_id("stDataFrame").locator("canvas").first.wait_for(timeout=60_000)


def test_a_person_fills_the_form_submits_it_and_reads_the_risk_and_its_reasons(
    page: Page, ui_url: str, served_url: str, artifacts_dir: Path
) -> None:
    page.goto(ui_url)
    page.get_by_label("Inpatient visits (prior year)", exact=True).fill("3")
    page.get_by_label("Primary diagnosis (ICD-9)", exact=True).fill("410")
    choose(page, "Age (years)", "[80-90)")
    choose(page, "Discharge disposition", "3 · Transferred to SNF")
    page.get_by_role("button", name="Predict readmission risk").click()

    page.get_by_text("Exact for this linear model").wait_for(timeout=60_000)  # the last element
    wait_until_drawn(page, charts=1)
    page.screenshot(path=artifacts_dir / "ui-prediction.png", full_page=True)

    record = {
        **example_encounter(),
        "number_inpatient": 3,
        "diag_1": "410",
        "age": "[80-90)",
        "discharge_disposition_id": 3,
    }
    expected = httpx.post(f"{served_url}/predict", json=record).json()
    metrics = page.get_by_test_id("stMetric")
    expect(metrics.filter(has_text="Risk of readmission within 30 days")).to_contain_text(
        f"{expected['probability']:.1%}"
    )
    expect(metrics.filter(has_text="Model version")).to_contain_text(f"v{PRODUCTION_VERSION}")
    expect(page.get_by_test_id("stAlert")).to_have_count(0)


def test_the_model_page_draws_the_training_history_with_production_marked(
    page: Page, ui_url: str, artifacts_dir: Path
) -> None:
    page.goto(f"{ui_url}/model")
    wait_until_drawn(page, charts=2)
    page.screenshot(path=artifacts_dir / "ui-model.png", full_page=True)

    expect(page.get_by_test_id("stMetric").filter(has_text="Production version")).to_contain_text(
        f"v{PRODUCTION_VERSION}"
    )
