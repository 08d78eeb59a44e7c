"""SIGKILL a `readmission` process at a named point of its work: `arm(point)` runs in the
process before the command line does (tests/chaos/conftest.py starts it with `prepare`).

The kill is a real SIGKILL the process sends itself, so nothing runs after it: no `finally`,
no rollback by Python, no atexit; what survives is exactly what the database and the MLflow
server had made durable by then.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import mlflow

from readmission import registry, training
from readmission.data import ingestion, lineage, row_copy
from readmission.model import ReadmissionModel
from readmission.release import ledger, promotion


def _killing(original: Callable[..., Any], after_calls: int = 0) -> Callable[..., Any]:
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > after_calls:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    return wrapper


def _killing_after(original: Callable[..., Any]) -> Callable[..., Any]:
    """Let the first call finish (its effect durable), then die."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    return wrapper


def arm(point: str) -> None:
    if point == "ingest-mid-write":  # the first chunk's rows written (COPY), the rest not
        row_copy.copy_all = _killing_after(row_copy.copy_all)
    elif point == "ingest-before-commit":  # everything written, the commit not reached
        ingestion.report_dict = _killing(ingestion.report_dict)
    elif point == "train-mid-fit":  # the MLflow run open, the model half updated
        # setattr: mypy refuses an assignment to a method, and this one is replaced on purpose.
        setattr(ReadmissionModel, "partial_fit", _killing(ReadmissionModel.partial_fit))  # noqa: B010
    elif point == "train-before-register":  # model logged to the run, no version yet
        mlflow.register_model = _killing(mlflow.register_model)
    elif point == "train-before-card":  # version registered, its card not numbered yet
        training._complete_card = _killing(training._complete_card)
    elif point == "train-after-register":  # version registered, the warehouse not told
        lineage.mark_trained = _killing(lineage.mark_trained)
    elif point == "promote-after-verdict":  # verdict tags recorded, production untouched
        # The name promotion calls: it imported the function, so patching the module it came
        # from would not reach it.
        promotion.change_production = _killing(promotion.change_production)
    elif point == "promote-after-alias":  # the alias moved to the challenger, no ledger row
        registry.promote = _killing_after(registry.promote)
    elif point == "promote-before-ledger":  # about to add the ledger row (uncommitted: lost)
        ledger.record = _killing(ledger.record)
    elif point == "rollback-after-alias":  # production back, the rollback not yet recorded
        registry.promote = _killing_after(registry.promote)
    elif point == "rollback-before-ledger":
        ledger.record = _killing(ledger.record)
    else:
        raise SystemExit(f"unknown crash point {point!r}")
