"""The model card the training step writes into each version's run (real MLflow server)."""

from __future__ import annotations

import pytest

from readmission import change_control, registry
from readmission.config import Settings
from readmission.data import tables, warehouse
from readmission.evaluation import holdout_evaluation, model_card
from readmission.model import labels
from readmission.release import gate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def card_of_version_2(trained_lineage: Settings) -> tuple[Settings, dict, str]:
    """Version 2 of the session's lineage (batches 1 and 2, warm-started from version 1): its
    card and markdown, read, not changed."""
    version = registry.model_version(trained_lineage, "2")
    assert version is not None and version.run_id is not None
    client = registry.connect(trained_lineage)
    markdown = client.download_artifacts(version.run_id, model_card.MARKDOWN_PATH)
    card = model_card.load(version.run_id)
    assert card is not None
    with open(markdown, encoding="utf-8") as file:
        return trained_lineage, card, file.read()


def test_the_card_describes_the_version_its_data_and_its_holdout(card_of_version_2) -> None:
    settings, card, _ = card_of_version_2
    holdout = warehouse.clean_rows(settings.warehouse_url, tables.HOLDOUT_BATCH)

    assert card["model"]["version"] == "2" and card["model"]["parent_version"] == "1"
    assert [b["batch_id"] for b in card["data"]["batches"]] == [1, 2]
    assert card["data"]["training_rows"] == 1000
    assert card["holdout"]["n"] == len(holdout)
    low, high = card["holdout"]["roc_auc_ci"]
    assert low < card["holdout"]["roc_auc"] < high
    assert card["holdout"]["bootstrap"]["resamples"] == settings.bootstrap_resamples
    assert {"intercept", "slope", "ece", "brier", "curve"} <= set(card["calibration"])
    assert card["published_range"]["roc_auc"] == [0.64, 0.674]
    assert card["intended_use"]["users"] and card["limitations"]


def test_subgroup_counts_add_up_and_every_auc_lies_in_its_interval(card_of_version_2) -> None:
    _, card, _ = card_of_version_2
    for attribute in ("race", "gender", "age"):
        rows = card["subgroups"][attribute]
        assert sum(row["n"] for row in rows) == card["holdout"]["n"], attribute
        for row in rows:
            if row["reliable"]:
                assert row["roc_auc_ci"][0] <= row["roc_auc"] <= row["roc_auc_ci"][1]
            else:
                assert row["roc_auc"] is None and "too few" in row["note"]


def test_the_threshold_is_chosen_on_the_holdout_and_served_with_the_version(
    card_of_version_2,
) -> None:
    settings, card, _ = card_of_version_2
    model = registry.load_readmission_model(settings, 2)

    assert card["threshold"]["chosen_on"] == "holdout"
    assert card["threshold"]["policy"] == "f1"
    assert card["threshold"]["value"] == pytest.approx(model.threshold)


def test_the_markdown_card_and_the_calibration_plot_are_in_the_run(card_of_version_2) -> None:
    settings, card, markdown = card_of_version_2
    client = registry.connect(settings)
    plots = {a.path for a in client.list_artifacts(card["model"]["run_id"], "plots")}

    assert model_card.CALIBRATION_PLOT in plots
    assert markdown.startswith(f"# Model card: {settings.model_name} version 2")
    for heading in ("## Calibration", "### Race", "### Gender", "### Age", "## Known limitations"):
        assert heading in markdown
    assert f"{card['holdout']['roc_auc']:.3f}" in markdown


def test_the_card_records_the_plan_and_the_rule_that_applied(card_of_version_2) -> None:
    settings, card, markdown = card_of_version_2
    plan = change_control.current(settings)
    section = card["change_control"]

    assert (section["plan_sha256"], section["plan_hash"]) == (plan.sha256, plan.short_hash)
    [warm_start] = section["rules_applied"]
    assert (warm_start["rule"], warm_start["outcome"]) == ("warm-start", "automatic")
    assert warm_start["facts"]["kind"] == "warm_start_training"
    assert warm_start["facts"]["version"] == "2"
    assert warm_start["plan_sha256"] == plan.sha256
    assert "## Change control" in markdown and f"`{plan.short_hash}`" in markdown
    assert "| warm_start_training | warm-start | automatic |" in markdown


# The items of the TRIPOD+AI checklist (BMJ 2024;385:e078378), in its order.
TRIPOD_AI_ITEMS = [
    "1", "2", "3a", "3b", "3c", "4", "5a", "5b", "6a", "6b", "6c", "7", "8a", "8b", "8c",
    "9a", "9b", "9c", "10", "11", "12a", "12b", "12c", "12d", "12e", "12f", "12g", "13", "14",
    "15", "16", "17", "18a", "18b", "18c", "18d", "18e", "18f", "19", "20a", "20b", "20c",
    "21", "22", "23a", "23b", "24", "25", "26", "27a", "27b", "27c",
]  # fmt: skip


def test_the_reporting_section_answers_every_tripod_ai_item(card_of_version_2) -> None:
    _, card, markdown = card_of_version_2
    items = card["reporting"]["items"]

    assert [i["item"] for i in items] == TRIPOD_AI_ITEMS
    assert card["reporting"]["checklist"].startswith("TRIPOD+AI")
    for item in items:
        assert item["note"], item["item"]
        if item["status"] == "not covered":
            assert item["where"] == [], item["item"]
        else:  # what is said to be reported is in the card
            assert item["where"] and set(item["where"]) <= set(card), item["item"]
    topics = {i["item"]: i["topic"] for i in items}
    assert (topics["14"], topics["15"], topics["16"]) == (
        "Fairness",
        "Model output",
        "Training versus evaluation",
    )
    assert "## Reporting: TRIPOD+AI" in markdown
    assert "| 23a | Model performance | covered | holdout, subgroups, calibration |" in markdown


def test_the_card_takes_the_decisions_of_the_plan_and_stops_on_an_invalid_plan(
    card_of_version_2, tmp_path
) -> None:
    settings, card, _ = card_of_version_2
    # The shipped plan, which reserves the first production version for a person (the suite's
    # own plan lets the platform make it).
    settings = settings.model_copy(update={"change_control_plan": str(change_control.DEFAULT_PLAN)})
    holdout = warehouse.clean_rows(settings.warehouse_url, tables.HOLDOUT_BATCH)
    y = labels(holdout)
    model = registry.load_readmission_model(settings, 2)
    ours = holdout_evaluation.evaluate_holdout(settings, holdout, y, model.predict_proba(holdout))
    plan = change_control.current(settings)
    first = change_control.classify(
        plan,
        change_control.ChangeFacts(
            kind=change_control.ChangeKind.PROMOTION,
            version="2",
            production_empty=True,
            lineage_head=True,
            same_feature_space=True,
            same_hyperparameters=True,
            checks={
                c.name: c.passed
                for c in gate.judge(gate.Policy.of(settings), gate.Measured.of(ours), None)
            },
            metrics={**ours.scores, "calibration_slope": ours.calibration.slope},
        ),
    )
    arguments = {
        "version": "2",
        "run_id": card["model"]["run_id"],
        "parent_version": "1",
        "batches": [],
        "parameters": card["parameters"],
        "samples_seen": card["data"]["training_rows"],
    }

    built = model_card.build(
        settings, ours, **arguments, decisions=[change_control.warm_start(plan, "2"), first]
    )

    applied = built["change_control"]["rules_applied"]
    assert [d["rule"] for d in applied] == ["warm-start", "first-production-version"]
    assert applied[1]["facts"]["metrics"]["roc_auc"] == pytest.approx(ours.scores["roc_auc"])
    assert "| promotion | first-production-version |" in model_card.markdown(built)

    broken = tmp_path / "change_control.yaml"
    broken.write_text(
        change_control.DEFAULT_PLAN.read_text().replace("min_auc: 0.60", "min_auc: x")
    )
    invalid = settings.model_copy(update={"change_control_plan": str(broken)})
    with pytest.raises(change_control.PlanError, match=r"rules\[0\]\.criteria\.min_auc"):
        model_card.build(invalid, ours, **arguments)
