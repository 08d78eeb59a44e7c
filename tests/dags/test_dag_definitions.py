"""The DAG files as the dag-processor sees them: ids, schedules, Assets, params, retries."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
from typing import Any

import pytest

from tests.dags.conftest import AIRFLOWIGNORE_WARNING, DAGS
from tests.services import BIN, ROOT, service_env

pytestmark = pytest.mark.filterwarnings(AIRFLOWIGNORE_WARNING)
PIPELINE = [
    "01_ingest_data",
    "02_warm_start_training",
    "03_evaluate_and_promote",
    "04_realized_performance",
]
TAGS = {
    "01_ingest_data": {"readmission", "data"},
    "02_warm_start_training": {"readmission", "training"},
    "03_evaluate_and_promote": {"readmission", "registry"},
    "04_realized_performance": {"readmission", "monitoring"},
}
IO_TASKS = {
    "01_ingest_data": "ingest",
    "02_warm_start_training": "train_untrained_batches",
    "03_evaluate_and_promote": "judge_challenger",
    "04_realized_performance": "measure_realized_performance",
}

# Parses dags/ with every socket refused and reports what happened, as JSON on stdout.
PARSE_OFFLINE = r"""
import json, socket, sys
from pathlib import Path
attempts = []
def refuse(self, address, *args):
    attempts.append(str(address))
    raise OSError("no network while parsing DAGs")
socket.socket.connect = socket.socket.connect_ex = refuse
from airflow.dag_processing.dagbag import BundleDagBag
folder = Path(sys.argv[1])
bag = BundleDagBag(dag_folder=folder, bundle_path=folder, bundle_name="dags-folder")
heavy = ("mlflow", "sklearn", "pandas", "readmission.data.ingestion", "readmission.registry",
         "readmission.extracts")
print(json.dumps({"dags": sorted(bag.dags), "errors": bag.import_errors, "connections": attempts,
                  "heavy_modules": [m for m in heavy if m in sys.modules],
                  "auto_promote": bag.dags["03_evaluate_and_promote"].params["auto_promote"]}))
"""


@pytest.mark.slow
def test_the_dag_folder_holds_the_four_pipeline_dags_listed_in_pipeline_order(
    dags: dict[str, Any],
) -> None:
    assert sorted(dags) == PIPELINE
    by_display_name = sorted(dags.values(), key=lambda dag: dag.dag_display_name)
    assert [dag.dag_id for dag in by_display_name] == PIPELINE


def test_every_dag_is_documented_tagged_and_starts_at_a_fixed_utc_date_without_catchup(
    dags: dict[str, Any],
) -> None:
    for dag in dags.values():
        assert dag.doc_md and dag.doc_md.strip().startswith("### 0"), dag.dag_id
        assert set(dag.tags) == TAGS[dag.dag_id]
        assert dag.start_date.utcoffset().total_seconds() == 0
        assert dag.catchup is False
        assert dag.is_paused_upon_creation is False  # so the Asset chain runs out of the box


def test_ingest_is_manual_and_training_then_evaluation_follow_through_assets(
    dags: dict[str, Any],
) -> None:
    from readmission_common import CLEAN_ENCOUNTERS, MODEL_VERSIONS, WAREHOUSE_CHANGES

    ingest, training, evaluation, realized = (dags[d] for d in PIPELINE)
    assert ingest.schedule is None
    assert ingest.task_dict["announce_new_batches"].outlets == [CLEAN_ENCOUNTERS]
    assert ingest.task_dict["announce_warehouse_changes"].outlets == [WAREHOUSE_CHANGES]
    assert ingest.task_dict["ingest"].downstream_task_ids == {
        "announce_new_batches",
        "announce_warehouse_changes",
    }
    assert list(training.timetable.asset_condition.objects) == [CLEAN_ENCOUNTERS]
    assert training.task_dict["announce_new_versions"].outlets == [MODEL_VERSIONS]
    assert list(evaluation.timetable.asset_condition.objects) == [MODEL_VERSIONS]
    # Every ingest that changed the warehouse, also one adding no training batch (outcomes or
    # holdout rows only); on this Asset alone, so one ingest starts one run.
    assert list(realized.timetable.asset_condition.objects) == [WAREHOUSE_CHANGES]
    emitting = {(d.dag_id, t.task_id) for d in dags.values() for t in d.tasks if t.outlets}
    assert emitting == {  # only the announcing tasks emit Asset events
        ("01_ingest_data", "announce_new_batches"),
        ("01_ingest_data", "announce_warehouse_changes"),
        ("02_warm_start_training", "announce_new_versions"),
    }


def test_training_trains_batches_one_after_another_in_one_task_one_run_at_a_time(
    dags: dict[str, Any],
) -> None:
    training = dags["02_warm_start_training"]
    assert training.max_active_runs == 1
    assert [t.task_id for t in training.topological_sort()] == [
        "train_untrained_batches",
        "announce_new_versions",
    ]
    assert not any(t.is_mapped for t in training.tasks)


def test_evaluation_asks_a_person_only_on_the_branch_the_plan_sends_there(
    dags: dict[str, Any],
) -> None:
    from airflow.providers.standard.operators.hitl import HITLOperator

    evaluation = dags["03_evaluate_and_promote"]
    assert evaluation.max_active_runs == 1  # one production decision at a time
    assert [t.task_id for t in evaluation.topological_sort()] == [
        "judge_challenger",
        "person_needed",
        "ask_a_person",
        "record_decision",
    ]
    ask = evaluation.task_dict["ask_a_person"]
    assert isinstance(ask, HITLOperator)
    assert ask.options == ["Approve", "Reject"] and not ask.multiple and ask.defaults is None
    assert set(ask.params) == {"comment"}  # the run's own params are not the form's
    assert evaluation.task_dict["record_decision"].upstream_task_ids == {
        "judge_challenger",
        "ask_a_person",
    }
    assert evaluation.task_dict["record_decision"].retries == 3


def test_tasks_doing_io_retry_with_exponential_backoff(dags: dict[str, Any]) -> None:
    for dag_id, task_id in IO_TASKS.items():
        task = dags[dag_id].task_dict[task_id]
        assert task.retries == 3
        assert task.retry_exponential_backoff == 2.0
        assert task.retry_delay.total_seconds() == 30
        assert task.max_retry_delay.total_seconds() == 300


def validated(dag: Any, conf: dict[str, Any]) -> dict[str, Any]:
    """The params of a run triggered with `conf`, checked as the API server and scheduler do."""
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    return serialized.params.deep_merge(conf).validate()


@pytest.mark.parametrize(
    "conf",
    [
        {},
        {"batches": 0},
        {"batches": None},
        {"batches": 3},
        {"source": "/data/diabetic_data.csv"},
        {"source": None},
    ],
)
def test_ingest_accepts_a_batch_count_or_all_and_an_optional_source(
    dags: dict[str, Any], conf: dict[str, Any]
) -> None:
    params = validated(dags["01_ingest_data"], conf)
    assert params["batches"] == conf.get("batches", 1)
    assert params["source"] == conf.get("source")


@pytest.mark.parametrize(
    ("dag_id", "conf", "field"),
    [
        ("01_ingest_data", {"batches": -1}, "batches"),
        ("01_ingest_data", {"batches": "two"}, "batches"),
        ("01_ingest_data", {"source": 5}, "source"),
        ("03_evaluate_and_promote", {"non_inferiority_margin": -0.1}, "non_inferiority_margin"),
        ("03_evaluate_and_promote", {"policy": "better"}, "policy"),
        ("03_evaluate_and_promote", {"auto_promote": "yes"}, "auto_promote"),
    ],
)
def test_a_bad_param_is_refused_naming_the_field(
    dags: dict[str, Any], dag_id: str, conf: dict[str, Any], field: str
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=f"Invalid input for param {field}:"):
        validated(dags[dag_id], conf)


def test_every_param_has_a_title_and_a_description(dags: dict[str, Any]) -> None:
    for dag in dags.values():
        for name, param in dag.params.items():
            assert param.schema.get("title") and param.description, f"{dag.dag_id}.{name}"


@pytest.mark.slow
def test_parsing_touches_no_database_or_network_and_reads_defaults_from_the_settings() -> None:
    unreachable = "10.255.255.1"
    env = service_env(
        DATABASE_URL=f"postgresql+psycopg://nobody@{unreachable}:5432/warehouse",
        MLFLOW_TRACKING_URI=f"http://{unreachable}:5000",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"postgresql+psycopg2://nobody@{unreachable}/airflow",
        AUTO_PROMOTE="true",
    )
    parsed = subprocess.run(
        [str(BIN / "python"), "-c", PARSE_OFFLINE, str(DAGS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(parsed.stdout.strip().splitlines()[-1])

    assert report["dags"] == PIPELINE
    assert report["errors"] == {}
    assert report["connections"] == []
    assert report["heavy_modules"] == []
    assert report["auto_promote"] is True


def imported_by_tasks() -> set[str]:
    """The modules the DAG files import inside functions (their tasks): `from a.b import c` is
    module a.b.c when that is a module, else a.b."""
    found: set[str] = set()
    for path in DAGS.glob("*.py"):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module:
                    for alias in node.names:
                        submodule = f"{node.module}.{alias.name}"
                        found.add(submodule if is_module(submodule) else node.module)
    return found


def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent is a module, not a package
        return False


def test_the_scheduler_preloads_every_module_a_task_imports() -> None:
    """airflow_config/airflow_local_settings.py: a task importing a module the list misses
    still runs, but pays the import (seconds) in every run."""
    spec = importlib.util.spec_from_file_location(
        "airflow_local_settings", ROOT / "airflow_config" / "airflow_local_settings.py"
    )
    assert spec is not None and spec.loader is not None
    settings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(settings)  # pytest's argv: not the scheduler, nothing preloaded
    imported = imported_by_tasks()
    assert "readmission.training" in imported
    assert imported <= set(settings.TASK_MODULES)
    assert settings.preload(("readmission.config", "readmission.no_such_module")) == [
        "readmission.no_such_module"
    ]
    scheduler = ["/venv/bin/airflow", "scheduler"]
    assert settings.wanted(scheduler, {})
    assert not settings.wanted(scheduler, {"READMISSION_PRELOAD_TASK_MODULES": "false"})
    assert settings.wanted(scheduler, {"READMISSION_PRELOAD_TASK_MODULES": "true"})
    assert not settings.wanted(["/venv/bin/airflow", "api-server"], {})
    assert not settings.wanted(["/venv/bin/airflow", "dag-processor"], {})
