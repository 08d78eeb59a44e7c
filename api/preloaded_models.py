"""Versions loaded before they are promoted, so that a promotion swaps in well under a second.

Loading a version (download, compile, verify against the pipeline, warm up) takes seconds on a
busy machine: longer than the promotion may take to reach the replicas. MLflow's webhook reports
each new version (model_version.created) to every replica (readmission.release.webhooks), which
loads it in the background here; the model store's loader then takes it from here when the alias
moves to it. The versions served before stay too, so a rollback is as quick. At most KEEP versions
are held; a version never loaded ahead is loaded when promoted, as before.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from mlflow.entities.model_registry import ModelVersion

from api.model_store import ServedModel, load_served_model
from readmission import registry
from readmission.config import Settings

log = logging.getLogger(__name__)
KEEP = 4  # the served version, the one before it (rollback), and new ones awaiting evaluation


class PreloadedModels:
    """A model store loader that answers from versions loaded ahead (`preload`)."""

    def __init__(
        self,
        settings: Settings,
        loader: Callable[[Settings, ModelVersion], ServedModel] = load_served_model,
    ) -> None:
        self.settings = settings
        self.loader = loader
        self._loaded: OrderedDict[str, Future[ServedModel]] = OrderedDict()
        self._lock = threading.Lock()
        # One at a time, in a thread of its own: a preload never holds up the event loop or the
        # watcher's loads, and two new versions do not compete for the CPU with the requests.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="model-preload")

    def preload(self, version: str) -> None:
        """Load `version` of the served model in the background, unless it is held already."""
        with self._lock:
            if version in self._loaded:
                return
            self._keep(version, self._worker.submit(self._load_registered, version))
        log.info(
            "loading version %s of %s ahead of its promotion", version, self.settings.model_name
        )

    def load(self, settings: Settings, version: ModelVersion) -> ServedModel:
        """The model store's loader: the version loaded ahead if it was, else loaded now."""
        with self._lock:
            ahead = self._loaded.get(str(version.version))
            if ahead is not None:
                self._loaded.move_to_end(str(version.version))  # kept longest: it is served
        if ahead is not None:
            try:
                served = ahead.result()  # waits if that load is still running
            except Exception as error:  # loaded again below, by the watcher's own rules
                log.warning("loading version %s ahead failed: %s", version.version, error)
            else:
                # Labels as the registry says now: they were read when it was loaded.
                alias = settings.model_alias if settings.model_alias in version.aliases else None
                return dataclasses.replace(served, alias=alias, stage=version.current_stage)
        served = self.loader(settings, version)
        done: Future[ServedModel] = Future()
        done.set_result(served)
        with self._lock:
            self._keep(str(version.version), done)
        return served

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _load_registered(self, version: str) -> ServedModel:
        found = registry.connect(self.settings).get_model_version(self.settings.model_name, version)
        return self.loader(self.settings, found)

    def _keep(self, version: str, loaded: Future[ServedModel]) -> None:
        self._loaded[version] = loaded
        self._loaded.move_to_end(version)
        while len(self._loaded) > KEEP:
            self._loaded.popitem(last=False)
