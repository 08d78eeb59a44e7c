"""Where a /predict request's time goes inside the app: cProfile over the ASGI app in process.

Trains batches 1 and 2 of the source into a fresh local platform (as `bench/serving.py --shadow`
does: version 2 in production, 1 in shadow), builds the app (`api.main.app`) and runs its
lifespan (the model watcher and the prediction log's writer, as under bin/api), then calls the
ASGI app directly (no socket, no HTTP parser: those are uvicorn's, measured by
bench/serving.py's floor) with real encounters:
first timed without the profiler in CPU time of this process (steadier than wall time on a
shared machine), `GET /health` (the app's floor) beside `POST /predict`, then
`POST /predict` under cProfile. Prints the top functions by own time and by cumulative time, and
the time per layer. Last line: a JSON object.

    .venv/bin/python bench/serving_profile.py --source ../shared/data/dataset_diabetes.zip
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

from local_platform import use_local_platform

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the api package beside bench/

# Where a request's time goes: each entry's cumulative time (itself and all it calls), per
# request, matched on pstats' "file:function" labels. Nested: the middleware include the route.
STAGES = {
    "HttpMetrics middleware and all inside": "api/http_metrics.py:__call__",
    "BodyLimit middleware and all inside": "api/body_limit.py:__call__",
    "the route (api.direct_route.DirectRoute) and all inside": "starlette/routing.py:handle",
    "predict handler": "api/routes/predict.py:predict",
    "body validation (pydantic-core, from JSON bytes)": "validate_json",
    "encounter to record": "readmission/schema.py:to_record",
    "scoring (logit, production and shadow)": "readmission/scoring.py:logit",
    "metrics of the prediction": "api/metrics.py:record",
    "drift window": "api/drift.py:observe",
    "prediction log (enqueue)": "api/prediction_recorder.py:record",
    "answer as JSON": "to_json",
}


class Call:
    """One ASGI request/response cycle against an app, in process."""

    def __init__(self, method: str, path: str, body: bytes = b"") -> None:
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"bench"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
        }
        self.body = body

    async def run(self, app: Any) -> int:
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": self.body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(self.scope), receive, send)
        return status


async def per_request_us(app: Any, calls: list[Call], repeat: int) -> float:
    started = time.process_time()
    for i in range(repeat):
        status = await calls[i % len(calls)].run(app)
        if status != 200:
            raise RuntimeError(f"{calls[0].scope['path']} answered {status}")
    return (time.process_time() - started) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/dataset_diabetes.zip")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    use_local_platform(args.source, "bench-serving-profile-", MODEL_POLL_SECONDS="3600")

    import numpy as np
    from serving import promoted_version

    from api.main import app  # built at import from the settings set above
    from readmission.config import get_settings
    from readmission.data import tables, warehouse
    from readmission.schema import FEATURES

    settings = get_settings()
    version = promoted_version(settings, shadow=True)
    state = app.state.app_state
    holdout = warehouse.clean_rows(settings.warehouse_url, tables.HOLDOUT_BATCH)
    encounters = [
        {k: (int(v) if isinstance(v, np.integer) else v) for k, v in r.items()}
        for r in holdout[list(FEATURES)].head(4000).to_dict("records")
    ]
    predict = [Call("POST", "/predict", json.dumps(e).encode()) for e in encounters]
    health = [Call("GET", "/health")]

    profiler = cProfile.Profile()

    async def measure() -> dict[str, float]:
        async with app.router.lifespan_context(app):
            while state.store.current is None or state.store.shadow is None:
                await asyncio.sleep(0.1)  # the watcher loads production and shadow
            await per_request_us(app, predict, 2000)  # warm-up
            timings = {
                "health_cpu_us": round(await per_request_us(app, health, args.requests), 1),
                "predict_cpu_us": round(await per_request_us(app, predict, args.requests), 1),
            }
            profiler.enable()
            await per_request_us(app, predict, args.requests)
            profiler.disable()
        return timings

    timings = asyncio.run(measure())
    print(f"in process, CPU per request (shadow on, log on): {timings}", flush=True)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top * 2)
    print(out.getvalue())
    # pstats keeps its table in `Stats.stats` (documented, missing from typeshed's stub):
    # (file, line, function) -> (calls, primitive calls, own time, cumulative time, callers).
    table = stats.stats  # type: ignore[attr-defined]  # see above
    total = max(v[3] for v in table.values())
    stages = {}
    for name, pattern in STAGES.items():
        cumulative = [v[3] for k, v in table.items() if pattern in f"{k[0]}:{k[2]}"]
        stages[name] = round(max(cumulative, default=0.0) / args.requests * 1e6, 1)
    print(
        json.dumps(
            {
                "model_version": version,
                **timings,
                "profiled_us_per_request": round(total / args.requests * 1e6, 1),
                "profiled_stages_us": stages,
            }
        )
    )


if __name__ == "__main__":
    main()
