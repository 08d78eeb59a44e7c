"""One warm-start training step on the real data set: seconds and peak memory, with an anchor.

Ingests the source into a fresh local warehouse, trains batch 1 (the cold start), then measures
batch 2 through `readmission.training.train_pending` (lease, load parent from MLflow,
prequential scoring, partial_fit, holdout evaluation, plots, log + register the model) against the
anchor: the bare
`ReadmissionModel.partial_fit` on the same batch. Peak memory is traced by tracemalloc (Python
and NumPy allocations). Last line: a JSON object.

    .venv/bin/python bench/training_step.py --source ../shared/data/dataset_diabetes.zip
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from local_platform import use_local_platform


def measured(step: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak MiB) of one call."""
    tracemalloc.start()
    started = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/dataset_diabetes.zip")
    args = parser.parse_args()
    use_local_platform(args.source, "bench-step-")

    from readmission import extracts, registry, training
    from readmission.config import get_settings
    from readmission.data import warehouse
    from readmission.model import labels

    settings = get_settings()
    extracts.ingest(settings, max_batches=2)
    training.train_pending(settings, max_batches=1)
    (result,), step_seconds, step_peak = measured(
        lambda: training.train_pending(settings, max_batches=1)
    )
    print(
        f"warm-start step (batch 2 -> v{result.version}): {step_seconds:.2f} s, "
        f"peak {step_peak:.0f} MiB traced"
    )

    model = registry.load_readmission_model(settings, 1)
    batch = warehouse.clean_rows(settings.warehouse_url, 2)
    _, fit_seconds, fit_peak = measured(lambda: model.partial_fit(batch, labels(batch)))
    print(
        f"anchor bare partial_fit on the same {len(batch)} rows: {fit_seconds:.2f} s, "
        f"peak {fit_peak:.0f} MiB traced"
    )
    print(
        json.dumps(
            {
                "batch_rows": len(batch),
                "step_seconds": round(step_seconds, 2),
                "step_peak_mib": round(step_peak, 1),
                "anchor_partial_fit_seconds": round(fit_seconds, 2),
                "anchor_partial_fit_peak_mib": round(fit_peak, 1),
                "overhead_ratio": round(step_seconds / fit_seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
