"""What the UI says when the API is down or serves no model: the cause and the next step."""

from __future__ import annotations

import streamlit as st

from readmission.config import get_settings
from streamlit_ui.api_client import ApiClient, ApiError, ApiUnavailable, NoModelPromoted


def start_hint(client: ApiClient) -> str:
    return (
        f"Start it with `bin/api` (or the whole platform with `make demo`), or point API_URL "
        f"at the running API. The UI looks for it at API_URL = `{client.base_url}`."
    )


def promote_hint() -> str:
    alias = get_settings().model_alias
    return (
        f"To put a model in production: `readmission promote <version>` (the versions are on "
        f"the Model page), the evaluate-and-promote DAG in Airflow with AUTO_PROMOTE=true, or "
        f"the alias `{alias}` on a version in the MLflow UI. The API picks it up within "
        "MODEL_POLL_SECONDS."
    )


def show(error: ApiError, client: ApiClient) -> None:
    """One message box for a failed call, by cause."""
    if isinstance(error, ApiUnavailable):
        st.error(
            f"**The API is not reachable.** {error}\n\n{start_hint(client)}",
            icon=":material/cloud_off:",
        )
    elif isinstance(error, NoModelPromoted):
        st.warning(
            f"**No model is being served yet.** The API says: {error}\n\n{promote_hint()}",
            icon=":material/hourglass_empty:",
        )
    else:
        st.error(f"**The API refused the request.** {error}", icon=":material/error:")


def warn_unless_ready(client: ApiClient) -> None:
    """Ask /ready, and say what is missing when the API cannot score yet."""
    try:
        with st.spinner(f"Contacting the API at {client.base_url} ..."):
            state = client.ready()
    except ApiError as error:
        show(error, client)
        return
    if not state.get("ready"):
        show(NoModelPromoted(str(state.get("reason", "the API is not ready"))), client)
