"""Run the locust_test users in library mode (Environment + local runner) until SIGTERM, or
for at most SECONDS, and print a JSON summary, including the model versions that answered
/predict, in order. (The tests stop it once what they watch for has happened under load: a
swarm of fixed length kept both cores busy for seconds after that.)

A process of its own, because importing Locust patches the standard library with gevent.
Usage: python -m tests.load.locust_library HOST USERS SECONDS
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import gevent
from locust import events
from locust.env import Environment

from locust_test.locustfile import ReadmissionUser


def run(host: str, users: int, seconds: float) -> dict[str, Any]:
    versions: list[str] = []  # each version once, in the order they first answered

    def on_request(name: str, response: Any = None, exception: Any = None, **_: Any) -> None:
        if name == "/predict" and exception is None and response.status_code == 200:
            version = response.json()["model_version"]
            if version not in versions:
                versions.append(version)

    events.request.add_listener(on_request)
    environment = Environment(user_classes=[ReadmissionUser], host=host, events=events)
    runner = environment.create_local_runner()
    runner.start(users, spawn_rate=users)
    gevent.spawn_later(seconds, runner.quit)
    gevent.signal_handler(signal.SIGTERM, runner.quit)
    runner.greenlet.join()
    environment.events.quitting.fire(environment=environment, reverse=True)
    total = environment.stats.total
    return {
        "requests": total.num_requests,
        "failures": total.num_failures,
        "p95_ms": total.get_response_time_percentile(0.95),
        "errors": [str(error.error) for error in environment.stats.errors.values()][:10],
        "by_name": {
            name: entry.num_requests for (name, _), entry in environment.stats.entries.items()
        },
        "versions": versions,
        "exit_code": environment.process_exit_code,
    }


if __name__ == "__main__":
    host, users, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(run(host, users, seconds)), flush=True)
