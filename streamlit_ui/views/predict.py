"""Predict: one encounter's risk of readmission within 30 days, and what drives it."""

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from readmission.evaluation.thresholds import RISK_BAND_RULE
from streamlit_ui import encounter_form, encounter_payload, notices
from streamlit_ui.api_client import ApiClient, ApiError
from streamlit_ui.explanations import factor

RESULT_KEY = "prediction"
CHART_FIELDS = 12


def show_contributions(
    contributions: list[dict[str, Any]], intercept: float | None, log_odds: float | None
) -> None:
    frame = pd.DataFrame(contributions)
    frame["factor"] = [factor(c["field"], c["value"]) for c in contributions]
    frame["effect"] = frame["logit"].map(lambda v: "raises risk" if v > 0 else "lowers risk")
    top = frame.head(CHART_FIELDS)
    chart = (
        alt.Chart(top)
        .mark_bar()
        .encode(
            x=alt.X("logit:Q", title="Effect on the log-odds of readmission"),
            y=alt.Y(
                "factor:N", sort=list(top["factor"]), title=None, axis=alt.Axis(labelLimit=320)
            ),
            color=alt.Color(
                "effect:N",
                title=None,
                legend=alt.Legend(orient="bottom"),
                scale=alt.Scale(
                    domain=["raises risk", "lowers risk"], range=["#d62728", "#2ca02c"]
                ),
            ),
            tooltip=["factor", alt.Tooltip("logit:Q", format="+.3f")],
        )
    )
    st.altair_chart(chart, width="stretch")
    st.dataframe(
        frame[["factor", "logit", "effect"]],
        hide_index=True,
        column_config={
            "factor": st.column_config.TextColumn("field"),
            "logit": st.column_config.NumberColumn("log-odds", format="%+.3f"),
        },
    )
    if intercept is not None and log_odds is not None:
        st.caption(
            f"Exact for this linear model: an average patient's log-odds ({intercept:+.3f}) plus "
            f"every field's share above make this patient's log-odds ({log_odds:+.3f}). A factor "
            "combining several fields (e.g. prior stays with the discharge destination) is shared "
            f"equally among them. The chart shows the {CHART_FIELDS} largest."
        )


def show_result(result: dict[str, Any]) -> None:
    st.subheader("Prediction")
    probability, threshold = result["probability"], result["threshold"]
    risk, band, label, version = st.columns(4)
    risk.metric("Risk of readmission within 30 days", f"{probability:.1%}")
    band.metric(
        "Risk band",
        result["risk_band"].capitalize(),
        help=RISK_BAND_RULE.capitalize(),
    )
    label.metric(
        "Predicted",
        "Readmitted" if result["readmitted_within_30d"] else "Not readmitted",
        help=f"Readmitted when the probability reaches the threshold {threshold:.3f}.",
    )
    version.metric("Model version", f"v{result['model_version']}", help=result["model_name"])
    if result.get("contributions"):
        st.markdown("**What pushed this patient's risk up or down**")
        show_contributions(result["contributions"], result.get("intercept"), result.get("log_odds"))


st.title("Readmission risk of one encounter")
st.caption("Fill in the admission record; every field starts at a typical encounter.")
client = ApiClient()
banner = st.empty()
record = encounter_form.render()

if record is None:
    with banner.container():
        notices.warn_unless_ready(client)
else:
    st.session_state.pop(RESULT_KEY, None)
    payload, problems = encounter_payload.from_record(
        {k: v.strip() if isinstance(v, str) else v for k, v in record.items()}
    )
    if payload is None:
        st.error("**Fix these fields:**\n\n" + "\n".join(f"- {p}" for p in problems))
    else:
        try:
            with st.spinner("Scoring the encounter ..."):
                st.session_state[RESULT_KEY] = client.predict(payload, explain=True)
        except ApiError as error:
            notices.show(error, client)

if RESULT_KEY in st.session_state:
    show_result(st.session_state[RESULT_KEY])
