"""The served version's model card on the Model page: intervals, calibration, subgroups."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

SUBGROUP_TABS = {"race": "Race", "gender": "Gender", "age": "Age band"}


def calibration_chart(curve: list[dict[str, float]]) -> alt.LayerChart:
    """Observed rate against mean prediction per equal-count bin; the diagonal is perfect."""
    frame = pd.DataFrame(curve)
    top = float(max(frame["mean_predicted"].max(), frame["observed_rate"].max())) * 1.1
    diagonal = (
        alt.Chart(pd.DataFrame({"p": [0.0, top]}))
        .mark_line(strokeDash=[4, 4], color="grey")
        .encode(x="p:Q", y="p:Q")
    )
    points = (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X(
                "mean_predicted:Q",
                title="Mean predicted probability",
                scale=alt.Scale(domain=[0, top]),
            ),
            y=alt.Y(
                "observed_rate:Q",
                title="Observed readmission rate",
                scale=alt.Scale(domain=[0, top]),
            ),
            tooltip=[
                alt.Tooltip("mean_predicted:Q", format=".3f"),
                alt.Tooltip("observed_rate:Q", format=".3f"),
                "n",
            ],
        )
    )
    return (diagonal + points).properties(height=300)


def subgroup_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    ci = frame["roc_auc_ci"].apply(lambda c: c if isinstance(c, list) else [None, None])
    frame["auc_ci_low"] = [c[0] for c in ci]
    frame["auc_ci_high"] = [c[1] for c in ci]
    columns = [
        "group",
        "n",
        "positives",
        "prevalence",
        "roc_auc",
        "auc_ci_low",
        "auc_ci_high",
        "calibration_in_the_large",
        "selection_rate",
        "ppv",
        "sensitivity",
        "note",
    ]
    return frame[columns]


def show_card(card: dict[str, Any]) -> None:
    model, holdout = card["model"], card["holdout"]
    calibration, threshold = card["calibration"], card["threshold"]
    st.subheader(f"Model card of version {model['version']}")
    low, high = holdout["roc_auc_ci"]
    auc, slope, intercept, cut = st.columns(4)
    auc.metric(
        "ROC-AUC (95% CI)",
        f"{holdout['roc_auc']:.3f} ({low:.3f}-{high:.3f})",
        help=f"Patient-level bootstrap, {holdout['bootstrap']['resamples']} resamples. "
        f"Published range for this data set: {card['published_range']['roc_auc']}.",
    )
    slope.metric(
        "Calibration slope",
        f"{calibration['slope']:.2f}",
        help="1 is ideal; below 1 predictions are too extreme, above 1 too timid.",
    )
    intercept.metric(
        "Calibration intercept",
        f"{calibration['intercept']:+.2f}",
        help="Calibration-in-the-large: below 0 the model over-predicts on average. "
        f"ECE {calibration['ece']:.4f}, Brier {calibration['brier']:.4f}.",
    )
    cut.metric(
        "Threshold",
        f"{threshold['value']:.3f}",
        help=f"Policy {threshold['policy']}: {threshold['description']}; chosen on the "
        f"{threshold['chosen_on']} ({threshold['n']} rows).",
    )
    at = holdout["at_threshold"]
    st.caption(
        f"Holdout: {holdout['n']:,} encounters of {holdout['patients']:,} patients, "
        f"{holdout['prevalence']:.1%} readmitted within 30 days. At the threshold: precision "
        f"{at['precision']:.3f}, recall {at['recall']:.3f}, {at['selection_rate']:.1%} flagged."
    )
    chart, use = st.columns(2)
    chart.markdown("**Calibration on the holdout**")
    chart.altair_chart(calibration_chart(calibration["curve"]), width="stretch")
    use.markdown("**Intended use**")
    use.markdown(
        f"{card['intended_use']['purpose']}\n\n*Users*: {card['intended_use']['users']}\n\n"
        f"*Out of scope*: {card['intended_use']['out_of_scope']}"
    )
    st.markdown("**Subgroups**")
    st.caption(
        f"Groups with fewer than {card['subgroups']['min_events']} readmissions (or "
        "non-readmissions) have no AUC: too few for a stable estimate. Each table adds up to "
        "the holdout."
    )
    for tab, attribute in zip(st.tabs(list(SUBGROUP_TABS.values())), SUBGROUP_TABS, strict=True):
        tab.dataframe(subgroup_frame(card["subgroups"][attribute]), hide_index=True)
    with st.expander("Known limitations"):
        st.markdown("\n".join(f"- {item}" for item in card["limitations"]))
