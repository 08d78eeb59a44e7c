"""A bounded Locust swarm in library mode with the users of locust_test/locustfile.py; prints the
totals as JSON. Run as its own process (`python -m tests.monitoring.locust_swarm`): Locust
monkey-patches the standard library with gevent, which must not leak into the pytest process."""

from __future__ import annotations

import argparse
import json

import gevent
from locust import User
from locust.env import Environment

from locust_test import locustfile


def user_classes() -> list[type[User]]:
    """The concrete users the locustfile defines (whatever they are called)."""
    return [
        cls
        for cls in vars(locustfile).values()
        if isinstance(cls, type)
        and issubclass(cls, User)
        and not cls.abstract
        and cls.__module__ == locustfile.__name__
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True, help="API base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    if not args.host.startswith(("http://127.0.0.1:", "http://localhost:")):
        parser.error("load tests only target 127.0.0.1")

    environment = Environment(user_classes=user_classes(), host=args.host)
    runner = environment.create_local_runner()
    runner.start(args.users, spawn_rate=args.users)
    gevent.sleep(args.seconds)  # runner.greenlet only spans the spawning, not the users
    runner.quit()
    total = environment.stats.total
    print(
        json.dumps(
            {
                "users": [cls.__name__ for cls in environment.user_classes],
                "requests": total.num_requests,
                "failures": total.num_failures,
                "errors": [str(e.error) for e in environment.stats.errors.values()],
            }
        )
    )


if __name__ == "__main__":
    main()
