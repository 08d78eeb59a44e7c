"""The `slow` marker, checked: `make test-fast` (pytest -m "not slow") must not start a process.

An audit hook counts every process this pytest process starts (subprocess, os.system,
posix_spawn, exec, fork, and tests/services.py's forks of `readmission`), whoever starts it; a
test not marked slow fails if one started while its fixtures were set up or while it ran, or if
it uses a fixture that started one earlier.
Registered as a plugin by tests/conftest.py.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from types import FrameType

import pytest

# Raised by tests.services for each `readmission` process it forks from its fork server (whose
# forks raise no audit event in this process).
FORK_EVENT = "tests.fork"
_PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.fork", "os.forkpty"}
    | {FORK_EVENT}
)
_process_starts = 0
_starting_fixtures: set[str] = set()  # fixtures seen starting a process
_starts_before = pytest.StashKey[int]()


def _count_process_starts(event: str, _args: tuple[object, ...]) -> None:
    global _process_starts
    if event in _PROCESS_EVENTS and not _importing():
        _process_starts += 1


def _importing() -> bool:
    """Whether a module is being imported: some run a helper once when first imported (croniter,
    through Airflow, runs `file` for platform.architecture()), in whichever test imports them
    first; that is no service of the test's."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


sys.addaudithook(_count_process_starts)  # cannot be removed; counting is all it does


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object],
) -> Generator[None, object, object]:
    before = _process_starts  # its dependencies are already set up: this counts its own
    try:
        return (yield)
    finally:
        if _process_starts > before:
            _starting_fixtures.add(fixturedef.argname)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_starts_before] = _process_starts


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    if item.get_closest_marker("slow") is None:
        started = _process_starts - item.stash[_starts_before]
        fixtures = sorted(_starting_fixtures & set(getattr(item, "fixturenames", ())))
        if started or fixtures:
            pytest.fail(
                f"{item.nodeid} starts processes ({started} while it ran, through fixtures "
                f"{fixtures}) but is not marked slow: add @pytest.mark.slow (or pytestmark)",
                pytrace=False,
            )
    return result
