"""The UI's entry point, `streamlit run streamlit_ui/app.py` (see bin/ui): three pages, one API."""

import streamlit as st

from readmission.config import get_settings

st.set_page_config(
    page_title="Readmission risk", page_icon=":material/local_hospital:", layout="wide"
)
page = st.navigation(
    [
        st.Page("views/predict.py", title="Predict", icon=":material/person:", default=True),
        st.Page("views/batch.py", title="Batch scoring", icon=":material/table_view:"),
        st.Page("views/model.py", title="Model", icon=":material/monitoring:"),
    ]
)
st.sidebar.caption(f"API: `{get_settings().api_url}`")
page.run()
