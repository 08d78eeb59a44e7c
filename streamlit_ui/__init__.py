"""The Streamlit UI: a thin client of the REST API (see `api_client`)."""
