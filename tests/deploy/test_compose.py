"""docker-compose.yaml, checked by the real Compose v2 binary and by reading its resolved model."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from deploy import dotenv
from readmission.config import Settings
from readmission.data import tables
from tests.services import service_env

from .conftest import COMPOSE_FILE, ROOT, env_values, load_yaml, run_compose, strings

ONE_SHOT = {"minio-init", "mlflow-init", "airflow-init", "warehouse-init", "webhook-init"}
AIRFLOW_COMPONENTS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
STATEFUL = {
    "postgres": "/var/lib/postgresql/data",
    "minio": "/data",
    "prometheus": "/prometheus",
    "alertmanager": "/alertmanager",
    "grafana": "/var/lib/grafana",
}


def long_running(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in model["services"].items() if name not in ONE_SHOT}


@pytest.mark.slow
def test_compose_config_is_valid_with_the_env_compose_up_generates(env_file: Path) -> None:
    for profile_args in ((), ("--profile", "serving")):
        result = run_compose(*profile_args, "config", "-q", env_file=env_file)
        assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_compose_config_fails_without_a_required_secret(env_file: Path, tmp_path: Path) -> None:
    incomplete = tmp_path / ".env"
    incomplete.write_text(
        "".join(
            line + "\n"
            for line in env_file.read_text().splitlines()
            if not line.startswith("POSTGRES_PASSWORD=")
        )
    )
    result = run_compose("config", "-q", env_file=incomplete)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


@pytest.mark.slow
def test_compose_config_fails_on_an_invalid_service_key(env_file: Path, tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace(
            "    restart: unless-stopped\n", "    restart: unless-stopped\n    restrat: always\n", 1
        )
    )
    result = run_compose("config", "-q", env_file=env_file, compose_file=broken)
    assert result.returncode != 0
    assert "restrat" in result.stderr


def test_every_secret_of_the_compose_file_is_generated_by_compose_up(compose_raw: dict) -> None:
    required = {name for text in strings(compose_raw) for name in re.findall(r"\$\{(\w+):\?", text)}
    assert required, "the compose file requires no variable at all?"
    assert required <= set(dotenv.SECRETS) | {"MINIO_ROOT_USER"}
    example = env_values((ROOT / ".env.example").read_text())
    assert example.get("MINIO_ROOT_USER"), ".env.example must give MINIO_ROOT_USER a value"


@pytest.mark.slow
def test_the_project_name_and_network_name_are_fixed(compose_model: dict) -> None:
    assert compose_model["name"] == "readmission"
    assert compose_model["networks"]["default"]["name"] == "readmission"
    k3d = load_yaml(ROOT / "k3d" / "cluster.yaml")
    assert k3d["network"] == compose_model["networks"]["default"]["name"]


@pytest.mark.slow
@pytest.mark.parametrize("service", ["mlflow", "postgres"])
def test_fixed_addresses_are_where_the_k3d_overlay_points(
    compose_model: dict, service: str
) -> None:
    subnet = compose_model["networks"]["default"]["ipam"]["config"][0]
    address = compose_model["services"][service]["networks"]["default"]["ipv4_address"]
    overlay = ROOT / "k8s" / "overlays" / "k3d"
    slice_ = load_yaml(overlay / f"{service}-endpointslice.yaml")
    assert slice_["endpoints"][0]["addresses"] == [address]
    egress = load_yaml(overlay / "api-egress-networkpolicy.yaml")["spec"]["egress"]
    assert {"ipBlock": {"cidr": f"{address}/32"}} in [
        peer for rule in egress for peer in rule["to"]
    ]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet["subnet"])
    assert ipaddress.ip_address(address) not in ipaddress.ip_network(subnet["ip_range"])


@pytest.mark.slow
def test_images_are_pinned(compose_model: dict) -> None:
    for name, service in compose_model["services"].items():
        image = service["image"]
        if "build" in service:  # our own images: tagged by IMAGE_TAG
            assert image.startswith("readmission-"), name
            continue
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"{name}: {image} is not pinned"
        assert re.search(r"\d", tag), f"{name}: {image} has no version in its tag"


@pytest.mark.slow
def test_every_long_running_service_has_a_healthcheck(compose_model: dict) -> None:
    for name, service in long_running(compose_model).items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert "curl" not in " ".join(test), f"{name}: images here do not all ship curl"


@pytest.mark.slow
def test_dependencies_wait_for_health_or_completion(compose_model: dict) -> None:
    for name, service in compose_model["services"].items():
        for dependency, spec in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert spec["condition"] == expected, f"{name} -> {dependency}"


@pytest.mark.slow
def test_one_shot_services_are_awaited_by_a_long_running_service(compose_model: dict) -> None:
    """`docker compose up --wait` fails on an exited container unless a running service waits
    for its successful completion."""
    for one_shot in ONE_SHOT:
        assert compose_model["services"][one_shot]["restart"] == "no"
        profiles = compose_model["services"][one_shot].get("profiles")  # webhook-init: serving
        waiters = [
            name
            for name, service in long_running(compose_model).items()
            if service.get("depends_on", {}).get(one_shot, {}).get("condition")
            == "service_completed_successfully"
            and service.get("profiles") == profiles
        ]
        assert waiters, f"nothing in the profile {profiles or 'default'} waits for {one_shot}"


@pytest.mark.slow
def test_stateful_services_keep_their_data_in_named_volumes(compose_model: dict) -> None:
    for name, path in STATEFUL.items():
        mounts = {m["target"]: m for m in compose_model["services"][name]["volumes"]}
        assert mounts[path]["type"] == "volume", f"{name}:{path} is not a named volume"
        assert mounts[path]["source"] in compose_model["volumes"]


@pytest.mark.slow
def test_published_ports_are_bound_to_loopback(compose_model: dict) -> None:
    for name, service in compose_model["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes on {port['host_ip']}"


@pytest.mark.slow
def test_postgres_init_creates_one_database_per_service_with_passwords_from_env(
    compose_model: dict,
) -> None:
    postgres = compose_model["services"]["postgres"]
    mounts = {m["target"]: m for m in postgres["volumes"]}
    init = mounts["/docker-entrypoint-initdb.d"]
    assert Path(init["source"]) == ROOT / "postgres_init" and init["read_only"]
    for user in ("AIRFLOW", "MLFLOW", "WAREHOUSE"):
        assert postgres["environment"][f"{user}_DB_PASSWORD"]
    assert postgres["environment"]["WAREHOUSE_API_PASSWORD"]  # the API's login (postgres_init)
    urls = {
        "airflow": compose_model["services"]["airflow-scheduler"]["environment"][
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
        ],
        "mlflow": compose_model["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"],
        "warehouse": compose_model["services"]["airflow-scheduler"]["environment"]["DATABASE_URL"],
    }
    assert compose_model["services"]["warehouse-init"]["environment"] == {
        "DATABASE_URL": urls["warehouse"]
    }
    for database, url in urls.items():
        assert re.fullmatch(
            rf"postgresql\+psycopg2?://{database}:[^@]+@postgres:5432/{database}", url
        ), url
    assert urls["mlflow"].startswith("postgresql+psycopg2://"), "MLflow needs psycopg2"


@pytest.mark.slow
def test_the_api_uses_the_warehouse_as_its_own_login_never_the_owners(
    compose_model: dict, env_file: Path
) -> None:
    """The API's login (postgres_init) may only add predictions, read realized performance, read
    the ledger and add to it; it cannot create tables, so warehouse-init, as the owner, creates
    them (and grants that login its rights) before the API starts."""
    values = env_values(env_file.read_text())
    services = compose_model["services"]
    url = sa.make_url(services["api"]["environment"]["DATABASE_URL"])
    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+psycopg",
        "postgres",
        5432,
        "warehouse",
    )
    assert url.username == tables.API_ROLE != "warehouse"
    assert url.password == values["WAREHOUSE_API_PASSWORD"] != values["WAREHOUSE_DB_PASSWORD"]
    assert services["postgres"]["environment"]["WAREHOUSE_API_PASSWORD"] == url.password
    init = services["warehouse-init"]
    assert init["entrypoint"] == ["python", "-m", "readmission", "init-warehouse"]
    assert sa.make_url(init["environment"]["DATABASE_URL"]).username == "warehouse"
    assert init["image"] == services["airflow-scheduler"]["image"]  # it has the platform
    assert init["depends_on"]["postgres"]["condition"] == "service_healthy"
    for waiter in ("api", "airflow-scheduler"):
        condition = services[waiter]["depends_on"]["warehouse-init"]["condition"]
        assert condition == "service_completed_successfully", waiter


@pytest.mark.slow
def test_mlflow_server_stores_artifacts_in_minio(compose_model: dict) -> None:
    env = compose_model["services"]["mlflow"]["environment"]
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["MLFLOW_HOST"] == "0.0.0.0"
    allowed = env["MLFLOW_ALLOWED_HOSTS"].split(",")
    assert {"mlflow", "mlflow:*", "localhost", "localhost:*"} <= set(allowed)
    bucket = env["MLFLOW_ARTIFACTS_DESTINATION"].removeprefix("s3://").strip("/")
    assert compose_model["services"]["minio-init"]["environment"]["MLFLOW_BUCKET"] == bucket


@pytest.mark.slow
def test_airflow_components_run_the_airflow_cli(compose_model: dict) -> None:
    for name, component in AIRFLOW_COMPONENTS.items():
        assert compose_model["services"][name]["command"] == ["airflow", component]
    init = " ".join(compose_model["services"]["airflow-init"]["command"])
    assert "airflow db migrate" in init


@pytest.mark.slow
def test_airflow_init_writes_the_admin_password_file_from_env(
    compose_model: dict, tmp_path: Path
) -> None:
    """The simple auth manager reads {user: password} JSON from this file; run the init's own
    command, up to the migration, against a temporary path."""
    init = compose_model["services"]["airflow-init"]
    path = init["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    write_file = (
        init["command"][0]
        .split(" && exec airflow db migrate")[0]
        .replace(path, str(tmp_path / "p.json"))
    )
    password = 'it\'s a "quoted" pass$word'
    result = subprocess.run(
        [*init["entrypoint"], write_file],
        capture_output=True,
        text=True,
        env={
            "PATH": os.environ["PATH"],
            "AIRFLOW_ADMIN_USER": "admin",
            "AIRFLOW_ADMIN_PASSWORD": password,
        },
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "p.json").read_text()) == {"admin": password}
    folder = str(Path(path).parent)
    init_mount = {m["target"]: m for m in init["volumes"]}[folder]
    server_mount = {
        m["target"]: m for m in compose_model["services"]["airflow-apiserver"]["volumes"]
    }[folder]
    assert init_mount["type"] == "volume" and init_mount["source"] == server_mount["source"]


@pytest.mark.slow
def test_airflow_components_share_keys_and_reach_the_execution_api(compose_model: dict) -> None:
    environments = [
        compose_model["services"][name]["environment"]
        for name in [*AIRFLOW_COMPONENTS, "airflow-init"]
    ]
    for key in (
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    ):
        values = {env[key] for env in environments}
        assert len(values) == 1 and values != {""}, key
    for env in environments:
        assert (
            env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
            == "http://airflow-apiserver:8080/execution/"
        )
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


@pytest.mark.slow
def test_optional_settings_pass_through_from_env_or_keep_their_defaults(
    compose_raw: dict, env_file: Path, tmp_path: Path
) -> None:
    """A setting missing from .env must reach the container unset (Settings' default applies),
    not as an empty string."""
    trimmed = tmp_path / ".env"
    trimmed.write_text(
        "".join(
            line + "\n"
            for line in env_file.read_text().splitlines()
            if not line.startswith(("BATCH_SIZE=", "DATA_SOURCE="))
        )
    )
    result = run_compose("config", "--format", "json", env_file=trimmed)
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)["services"]["airflow-scheduler"]["environment"]
    assert env["BATCH_SIZE"] is None and env["DATA_SOURCE"] is None
    assert env["MODEL_NAME"] == env_values(env_file.read_text())["MODEL_NAME"]


@pytest.mark.slow
@pytest.mark.parametrize("service", ["airflow-scheduler", "airflow-apiserver", "api", "ui"])
def test_container_environment_gives_valid_settings(
    compose_model: dict, service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What a container's readmission.config.Settings reads, from the .env compose-up writes."""
    environment = {
        k: v for k, v in compose_model["services"][service]["environment"].items() if v is not None
    }
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env here: the container has none either
    settings = Settings()
    if service != "ui":  # the API reads and writes the promotion ledger in the warehouse
        assert settings.warehouse_url == environment["DATABASE_URL"]
    if service != "ui":
        assert settings.tracking_uri == "http://mlflow:5000"
    else:
        assert settings.api_url == "http://api:8000"


@pytest.mark.slow
@pytest.mark.parametrize("service", ["api", "ui", "mlflow"])
def test_built_services_use_the_dockerfile_of_their_name(compose_model: dict, service: str) -> None:
    build = compose_model["services"][service]["build"]
    assert Path(build["context"]) == ROOT
    assert build["dockerfile"] == f"docker/{service}.Dockerfile"


@pytest.mark.slow
def test_healthchecks_allow_slow_probes_at_official_airflow_intervals(
    compose_model: dict,
) -> None:
    """`airflow jobs check` takes 5-7 s on a busy 2-core machine: a 10 s timeout at least, and
    the official Airflow compose file's pace (probes every 10-30 s, 5 retries)."""
    for name, service in long_running(compose_model).items():
        check = service["healthcheck"]
        assert seconds(check["timeout"]) >= 10, f"{name}: timeout {check['timeout']}"
        assert 10 <= seconds(check["interval"]) <= 30, f"{name}: interval {check['interval']}"
        assert check["retries"] >= 5, name
        assert seconds(check["interval"]) * check["retries"] >= 50, name
        # urlopen's own timeout must end before Docker's, so a slow answer is a failure, not a kill.
        for timeout in re.findall(r"timeout=(\d+)", " ".join(check["test"])):
            assert int(timeout) < seconds(check["timeout"]), name


def seconds(duration: str) -> float:
    """A Compose duration (`10s`, `1m30s`, `500ms`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.mark.slow
def test_mlflow_uses_its_own_minio_key_never_the_root_keys(compose_model: dict) -> None:
    services = compose_model["services"]
    mlflow, init = services["mlflow"]["environment"], services["minio-init"]["environment"]
    root = {init["MINIO_ROOT_USER"], init["MINIO_ROOT_PASSWORD"]}
    assert mlflow["AWS_ACCESS_KEY_ID"] == init["MINIO_MLFLOW_USER"]
    assert mlflow["AWS_SECRET_ACCESS_KEY"] == init["MINIO_MLFLOW_PASSWORD"]
    assert not root & {mlflow["AWS_ACCESS_KEY_ID"], mlflow["AWS_SECRET_ACCESS_KEY"]}
    for name, service in services.items():
        if name not in ("minio", "minio-init"):
            values = set((service.get("environment") or {}).values())
            assert not root & values, f"{name} holds MinIO's root keys"


@pytest.mark.slow
def test_minio_init_limits_mlflows_key_to_the_bucket(compose_model: dict) -> None:
    init = compose_model["services"]["minio-init"]
    script = Path(next(m["source"] for m in init["volumes"] if m["target"] in init["entrypoint"]))
    text = script.read_text()
    assert "arn:aws:s3:::$bucket/*" in text and 'arn:aws:s3:::$bucket"' in text
    assert '"s3:*"' not in text
    assert 'mc admin user add local "$MINIO_MLFLOW_USER" "$MINIO_MLFLOW_PASSWORD"' in text
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_mlflow_asks_for_a_login_and_each_client_has_its_own(compose_model: dict) -> None:
    services = compose_model["services"]
    server = services["mlflow"]["environment"]
    assert server["MLFLOW_AUTH_ADMIN_PASSWORD"] and server["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    admin = (server["MLFLOW_AUTH_ADMIN_USERNAME"], server["MLFLOW_AUTH_ADMIN_PASSWORD"])
    for name in [*AIRFLOW_COMPONENTS, "airflow-init", "mlflow-init"]:
        env = services[name]["environment"]
        assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == admin, name
    init = services["mlflow-init"]["environment"]
    api = services["api"]["environment"]
    reader = (init["MLFLOW_READER_USERNAME"], init["MLFLOW_READER_PASSWORD"])
    assert (api["MLFLOW_TRACKING_USERNAME"], api["MLFLOW_TRACKING_PASSWORD"]) == reader
    assert reader[0] != admin[0] and reader[1] != admin[1]
    assert services["mlflow-init"]["entrypoint"] == ["bin/mlflow-users"]
    # The reader is granted the model and experiment the tasks write and the API reads.
    for key in ("MODEL_NAME", "MLFLOW_EXPERIMENT_NAME"):
        assert init[key] == services["airflow-scheduler"]["environment"][key], key
    assert init["MODEL_NAME"] == api["MODEL_NAME"]
    assert services["api"]["depends_on"]["mlflow-init"]["condition"] == (
        "service_completed_successfully"
    )


@pytest.mark.slow
def test_make_up_needs_no_project_environment() -> None:
    """Only Docker with Compose and python3: `make up` neither syncs nor needs the venv."""
    # A fresh environment: under `make test`, an inherited MAKELEVEL makes make print
    # "Entering directory" lines around the plan.
    result = subprocess.run(
        ["make", "-n", "up"],
        cwd=ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "uv sync" not in result.stdout and ".venv" not in result.stdout
    assert result.stdout.split() == ["scripts/compose-up"]
    script = (ROOT / "scripts" / "compose-up").read_text()
    assert "python3 -m deploy.dotenv" in script and ".venv" not in script.split("cat <<INFO")[0]
    imports = re.findall(
        r"^(?:from|import) (\w+)", (ROOT / "deploy" / "dotenv.py").read_text(), re.M
    )
    assert set(imports) <= set(sys.stdlib_module_names), "deploy.dotenv must be standard library"


@pytest.mark.slow
def test_alertmanager_renders_its_receivers_from_env_before_starting(
    env_file: Path, tmp_path: Path
) -> None:
    configured = tmp_path / ".env"
    configured.write_text(env_file.read_text() + "ALERT_WEBHOOK_URL=https://hooks.example.org/a\n")
    result = run_compose("--profile", "serving", "config", "--format", "json", env_file=configured)
    assert result.returncode == 0, result.stderr
    alertmanager = json.loads(result.stdout)["services"]["alertmanager"]
    assert alertmanager["environment"]["ALERT_WEBHOOK_URL"] == "https://hooks.example.org/a"
    script = " ".join(alertmanager["command"])
    render = script.index("/etc/alertmanager/render-config /etc/alertmanager/alertmanager.yml")
    assert render < script.index("exec /bin/alertmanager --config.file=/tmp/alertmanager.yml")
    mount = next(m for m in alertmanager["volumes"] if m["target"] == "/etc/alertmanager")
    assert Path(mount["source"]) == ROOT / "monitoring" / "alertmanager" and mount["read_only"]


@pytest.mark.parametrize(
    ("service", "secrets"),
    [
        # WAREHOUSE_API_PASSWORD: the promotion ledger and the prediction log live in the
        # warehouse, which the API reaches as its own login (never the owner's)
        (
            "api",
            {
                "API_RELOAD_TOKEN",
                "MLFLOW_API_PASSWORD",
                "WAREHOUSE_API_PASSWORD",
                "MLFLOW_WEBHOOK_SECRET",
            },
        ),
        ("webhook-init", {"MLFLOW_ADMIN_PASSWORD", "MLFLOW_WEBHOOK_SECRET"}),
        ("warehouse-init", {"WAREHOUSE_DB_PASSWORD"}),
        ("ui", set()),
        ("prometheus", set()),
        ("alertmanager", set()),
        ("grafana", {"GRAFANA_ADMIN_PASSWORD"}),
        (
            "mlflow",
            {
                "MLFLOW_DB_PASSWORD",
                "MINIO_MLFLOW_PASSWORD",
                "MLFLOW_ADMIN_PASSWORD",
                "MLFLOW_FLASK_SECRET_KEY",
                "MLFLOW_WEBHOOK_ENCRYPTION_KEY",
            },
        ),
    ],
)
@pytest.mark.slow
def test_serving_and_mlflow_containers_get_only_the_secrets_they_use(
    compose_model: dict, env_file: Path, service: str, secrets: set[str]
) -> None:
    generated = env_values(env_file.read_text())
    environment = " ".join(
        str(value)
        for value in (compose_model["services"][service].get("environment") or {}).values()
    )
    held = {key for key in dotenv.SECRETS if generated[key] in environment}
    assert held == secrets
