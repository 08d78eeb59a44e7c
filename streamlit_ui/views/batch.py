"""Batch scoring: a CSV of encounters in, the same rows with their risk out."""

import hashlib
from pathlib import Path

import streamlit as st

from readmission.config import get_settings
from streamlit_ui import batch_scoring, notices
from streamlit_ui.api_client import ApiClient, ApiError

RESULT_KEY = "batch_result"


@st.cache_data(show_spinner="Checking every row ...", max_entries=4)
def check_upload(data: bytes) -> batch_scoring.CheckedRows:
    """Read and check an upload once, not again on each rerun (pressing Score reruns the page)."""
    return batch_scoring.check_rows(batch_scoring.read_csv(data))


st.title("Batch scoring")
st.caption(
    "Upload encounters as a CSV with the header of the data set's diabetic_data.csv. "
    "Each row is checked first; valid rows are scored, the others listed with the reason. "
    "Extra columns (such as readmitted) are kept in the download but not sent."
)
client = ApiClient()
banner = st.empty()
upload = st.file_uploader("Encounters (CSV)", type="csv")
score = False

if upload is not None:
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    try:
        checked = check_upload(data)
    except batch_scoring.UnreadableCsv as error:
        st.error(f"**{upload.name}**: {error}")
        st.stop()
    valid, invalid = len(checked.good), len(checked.bad)
    st.markdown(
        f"**{upload.name}**: {valid + invalid} rows, {valid} valid, {invalid} with problems."
    )
    if invalid:
        st.warning(
            f"{invalid} rows cannot be scored and are left out (row numbers count data "
            "rows from 1, after the header):"
        )
        st.dataframe(checked.bad, hide_index=True)
    if valid:
        score = st.button(f"Score {valid} valid rows", type="primary")
    if score:
        try:
            with st.spinner(f"Scoring {valid} rows ..."):
                predictions = client.predict_many(checked.payloads, get_settings().max_batch_rows)
            st.session_state[RESULT_KEY] = (digest, batch_scoring.scored(checked.good, predictions))
        except ApiError as error:
            notices.show(error, client)

    stored = st.session_state.get(RESULT_KEY)
    if stored is not None and stored[0] == digest:
        result = stored[1]
        st.subheader("Scored rows")
        rows, readmits, mean = st.columns(3)
        rows.metric("Rows scored", len(result))
        readmits.metric("Predicted readmissions", int(result["readmitted_within_30d"].sum()))
        mean.metric("Mean risk", f"{result['probability'].mean():.1%}")
        appended = list(batch_scoring.APPENDED)
        shown = result[[*appended, *(c for c in result.columns if c not in appended)]]
        st.dataframe(shown.rename_axis("row"))
        st.download_button(
            "Download the scored CSV",
            batch_scoring.to_csv(result),
            file_name=f"{Path(upload.name).stem}_scored.csv",
            mime="text/csv",
            on_click="ignore",
            type="primary",
        )

if not score:
    with banner.container():
        notices.warn_unless_ready(client)
