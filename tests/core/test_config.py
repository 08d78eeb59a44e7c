"""Settings: embedded defaults, environment overrides, and `.env` files as `make up` writes them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from readmission.config import Settings


def test_embedded_defaults_need_no_configuration(
    configure: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = configure()
    assert settings.warehouse_url.startswith("sqlite:///") and "home" in settings.warehouse_url
    assert settings.tracking_uri.startswith("sqlite:///")
    assert (settings.model_name, settings.model_alias) == (
        "diabetes-readmission-predictor",
        "production",
    )
    assert settings.batch_size == 15000 and settings.api_reload_token is None


def test_empty_values_in_a_dotenv_file_mean_unset(
    configure: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("SGD_ALPHA=\nSGD_EPOCHS=\nAPI_RELOAD_TOKEN=\nBATCH_SIZE=700\n")
    settings = configure()
    assert settings.sgd_alpha is None and settings.sgd_epochs is None
    assert settings.api_reload_token is None
    assert settings.batch_size == 700


def test_the_example_env_file_is_a_valid_configuration(
    configure: Callable[..., Settings], tmp_path: Path
) -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    (tmp_path / ".env").write_text(example.read_text())
    assert configure().model_name == "diabetes-readmission-predictor"
