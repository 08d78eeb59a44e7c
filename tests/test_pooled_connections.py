"""Between tests, the idle connections of every engine are closed (tests/conftest.py's
`_release_pooled_connections`) without stranding the ones in use: a connection checked out at
that moment, as by a worker thread of the in-process API (`in_process_api` outlives its tests),
goes back to its engine's pool when returned, never into a pool nothing references, where only
the garbage collector would find it, still open (psycopg's ResourceWarning, in whichever test
the collector ran)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import sqlalchemy as sa

from tests.conftest import close_idle_connections


def test_a_connection_in_use_during_the_release_returns_to_its_engines_pool(
    create_database: Callable[[], str],
) -> None:
    engine = sa.create_engine(create_database())
    try:
        busy = engine.connect()  # checked out while the release runs
        busy_driver = weakref.ref(busy.connection.driver_connection)
        with engine.connect() as idle:
            idle_driver = idle.connection.driver_connection
        assert idle_driver is not None
        # idle_driver is back in the pool, idle

        close_idle_connections(engine)
        assert idle_driver.closed
        busy.close()  # returned after the release
        del busy
        gc.collect()  # a pool nothing references would be freed here, its connection open

        returned = busy_driver()
        assert returned is not None
        assert not returned.closed
        assert isinstance(engine.pool, sa.QueuePool)
        assert engine.pool.checkedin() == 1  # idle in the engine's own pool
        with engine.connect() as again:  # and used again
            assert again.connection.driver_connection is busy_driver()
        close_idle_connections(engine)
        assert returned.closed  # closed by the next release
    finally:
        engine.dispose()
