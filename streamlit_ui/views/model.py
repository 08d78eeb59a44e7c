"""Model: the production version the API serves, its model card, the warm-start training
history and the ledger of production changes."""

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from streamlit_ui import notices
from streamlit_ui.api_client import ApiClient, ApiError, ApiUnavailable
from streamlit_ui.model_card_view import show_card


def show_served(model: dict[str, Any]) -> None:
    metrics = model.get("metrics", {})
    version, auc, log_loss, alias = st.columns(4)
    version.metric("Production version", f"v{model['version']}", help=model["name"])
    auc.metric("Holdout ROC AUC", f"{metrics.get('holdout_roc_auc', float('nan')):.4f}")
    log_loss.metric("Holdout log-loss", f"{metrics.get('holdout_log_loss', float('nan')):.4f}")
    alias.metric(
        "Registry alias",
        model.get("alias") or "-",
        help=f"Legacy stage: {model.get('stage') or 'none'}",
    )
    if not model.get("registry_reachable", True):
        st.warning(
            f"The API cannot reach the model registry; it keeps serving v{model['version']}."
            f" Last error: {model.get('last_error')}"
        )
    with st.expander("Serving details and every metric of the training run"):
        st.json(
            {
                key: model.get(key)
                for key in (
                    "name",
                    "version",
                    "run_id",
                    "loaded_at",
                    "reloads",
                    "load_failures",
                    "last_error",
                )
            }
        )
        st.dataframe(pd.Series(metrics, name="value").rename_axis("metric"))


def history_chart(frame: pd.DataFrame, metric: str, title: str) -> alt.LayerChart:
    """One metric per version, the production version drawn larger and labelled."""
    base = alt.Chart(frame).encode(
        x=alt.X("version:O", title="Model version (one per training batch)", sort=None),
        y=alt.Y(f"{metric}:Q", title=title, scale=alt.Scale(zero=False)),
        tooltip=[
            "version",
            "batch_id",
            "parent_version",
            "samples_seen",
            alt.Tooltip(f"{metric}:Q", format=".4f"),
            "role",
        ],
    )
    line = base.mark_line(point=True)
    production = base.transform_filter(alt.datum.role == "production")
    marker = production.mark_point(size=250, shape="diamond", filled=True, color="#d62728")
    label = production.mark_text(dy=-16, color="#d62728", text="production")
    return (line + marker + label).properties(height=260)


def show_history(history: dict[str, Any]) -> None:
    versions = history["versions"]
    st.subheader(f"Training history of {history['model_name']}")
    if not versions:
        st.info(
            "No version is registered yet: ingest and train a batch (the Airflow DAGs, or "
            "`readmission ingest --batches 1` then `readmission train`)."
        )
        return
    production = history.get("production_version")
    frame = pd.DataFrame(versions)
    frame.insert(1, "role", ["production" if v == production else "" for v in frame["version"]])
    compared = history.get("compared_holdout_fingerprint")
    auc, log_loss = st.columns(2)
    if compared and frame["compared_roc_auc"].notna().any():
        # Like with like: every version on the same rows, as the promotion gate scored them.
        auc.altair_chart(
            history_chart(frame, "compared_roc_auc", f"ROC AUC on holdout {compared}"),
            width="stretch",
        )
        where = (
            f"The ROC AUC chart shows every version on the same holdout ({compared}), as the "
            "promotion gate scored them; a version not yet scored there is left out."
        )
    else:
        auc.altair_chart(
            history_chart(frame, "holdout_roc_auc", "ROC AUC at training"), width="stretch"
        )
        where = (
            "The ROC AUC chart shows each version on the holdout of its training day "
            "(`holdout_fingerprint`): the holdout grows with every extract, so versions of "
            "different days were scored on different rows. `readmission evaluate` scores them "
            "all on today's."
        )
    log_loss.altair_chart(
        history_chart(frame, "holdout_log_loss", "Log-loss at training"), width="stretch"
    )
    st.caption(
        "Each version warm-starts from its parent on one more batch. "
        f"{where} The red diamond is the production version."
    )
    st.dataframe(frame, hide_index=True)


def show_promotions(promotions: list[dict[str, Any]]) -> None:
    st.subheader("Production changes")
    if not promotions:
        st.info("No production change recorded yet: `readmission promote VERSION`.")
        return
    st.caption(
        "Every change of the production version, oldest first: by the DAG, a person (in the "
        "Airflow UI or the CLI), or a change made in the MLflow UI that the platform noticed. "
        "Each row names the change control plan in force (`plan_sha256`): for an automatic "
        "promotion the plan's `rule` that allowed it, for a person's decision their `comment`. "
        "An automatic promotion carries the gate's evidence: the AUC difference to the "
        "champion on the same holdout (`delta_roc_auc`), its 95% interval and the holdout's "
        "fingerprint. Undo the last one with `readmission rollback` (the gate never promotes a "
        "rolled-back version again)."
    )
    st.dataframe(pd.DataFrame(promotions), hide_index=True)


def show_live_comparison(report: dict[str, Any], rows: pd.DataFrame) -> None:
    """Production and its shadow on the same encounters: both realized AUCs (recent window)
    and the paired difference with its interval."""
    comparisons = report.get("comparisons") or []
    if not comparisons:
        return
    st.markdown("**Live comparison: shadow against production, on the same encounters**")
    recent = {v["version"]: (v.get("recent") or {}).get("roc_auc") for v in report["versions"]}
    lines = pd.DataFrame(
        {
            "version": f"v{version} ({served_as})",
            "recent realized AUC": recent.get(version),
        }
        for version, served_as in zip(rows["version"], rows["served as"], strict=True)
    ).dropna()
    if not lines.empty:
        st.altair_chart(
            alt.Chart(lines)
            .mark_bar()
            .encode(
                x=alt.X("recent realized AUC:Q", scale=alt.Scale(zero=False)),
                y=alt.Y("version:N", sort=None),
                color="version:N",
                tooltip=["version", alt.Tooltip("recent realized AUC:Q", format=".4f")],
            )
            .properties(height=60 + 30 * len(lines)),
            width="stretch",
        )
    st.dataframe(
        pd.DataFrame(
            {
                "production": c["production"],
                "shadow": c["shadow"],
                "paired outcomes": c["n"],
                "AUC shadow - production": c["delta_roc_auc"],
                "95% interval": (
                    f"[{c['delta_roc_auc_ci'][0]:.4f}, {c['delta_roc_auc_ci'][1]:.4f}]"
                    if c["delta_roc_auc_ci"]
                    else None
                ),
            }
            for c in comparisons
        ),
        hide_index=True,
    )
    st.caption(
        "Paired: the same encounters, scored by both in the same request, counted only when "
        "their outcome is honest; the interval resamples whole patients. Its lower end above 0 "
        "over LIVE_MIN_OUTCOMES outcomes promotes the shadow (`readmission performance --act`)."
    )


def show_performance(report: dict[str, Any] | None) -> None:
    """Realized vs holdout AUC per served version, the pending count and the estimate."""
    st.subheader("Realized performance of the served versions")
    if report is None or not report["versions"]:
        st.info(
            "Not computed yet: the API logs every encounter it scores, and the realized "
            "performance is computed after each ingest that brings outcomes (Airflow "
            "`04_realized_performance`, or `readmission performance`)."
        )
        return
    rows = pd.DataFrame(
        {
            "version": v["version"],
            "served as": v.get("role", "production"),  # reports before shadows: production
            "scored": v["scored"],
            "labelled": v["n"],
            "pending": v["pending"],
            "realized AUC": v["roc_auc"],
            "holdout AUC": v["holdout_roc_auc"],
            "estimated AUC (pending)": v["estimate"]["roc_auc"],
            "calibration slope": v["calibration_slope"],
            "observed rate": v["observed_rate"],
            "mean predicted": v["mean_predicted"],
            "PPV": v["ppv"],
            "sensitivity": v["sensitivity"],
        }
        for v in report["versions"]
    )
    long = rows.melt(
        id_vars="version",
        value_vars=["realized AUC", "holdout AUC", "estimated AUC (pending)"],
        var_name="measure",
        value_name="ROC AUC",
    ).dropna()
    chart = (
        alt.Chart(long)
        .mark_point(size=120, filled=True)
        .encode(
            x=alt.X("version:O", title="Served version", sort=None),
            y=alt.Y("ROC AUC:Q", scale=alt.Scale(zero=False)),
            color="measure:N",
            shape="measure:N",
            tooltip=["version", "measure", alt.Tooltip("ROC AUC:Q", format=".4f")],
        )
        .properties(height=260)
    )
    st.altair_chart(chart, width="stretch")
    st.dataframe(rows, hide_index=True)
    st.caption(
        f"Computed {report['computed_at']}. Realized: on the encounters a version scored whose "
        "outcome has arrived. Estimated: the expected AUC of those still pending, from their "
        "probabilities alone, an estimate that holds as far as the model is calibrated."
    )
    show_live_comparison(report, rows)
    with st.expander("Per calendar week of scoring, and earlier estimates against outcomes"):
        for v in report["versions"]:
            st.markdown(f"**Version {v['version']}**")
            st.dataframe(
                pd.DataFrame(
                    {
                        "week": w["week"],
                        "scored": w["scored"],
                        "labelled": w["n"],
                        "pending": w["pending"],
                        "realized AUC": w["roc_auc"],
                        "estimated AUC (pending)": w["estimate"]["roc_auc"],
                    }
                    for w in v["weeks"]
                ),
                hide_index=True,
            )
            if v["estimate_checks"]:
                st.dataframe(pd.DataFrame(v["estimate_checks"]), hide_index=True)


st.title("Model")
client = ApiClient()
served: dict[str, Any] | None = None
try:
    with st.spinner("Asking the API which model it serves ..."):
        served = client.model()
    show_served(served)
except ApiError as error:
    notices.show(error, client)
    if isinstance(error, ApiUnavailable):
        st.stop()

if served is not None:
    try:
        show_card(client.card())
    except ApiError as error:
        st.info(f"No model card for this version: {error}")

try:
    show_performance(client.performance())
except ApiError as error:
    notices.show(error, client)

try:
    history = client.history()
    show_history(history)
    show_promotions(history["promotions"])
except ApiError as error:
    notices.show(error, client)
