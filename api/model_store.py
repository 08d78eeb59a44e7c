"""The served model: resolved in the registry, compiled, verified, and swapped in atomically.

A watcher polls the registry every MODEL_POLL_SECONDS. A new production version is loaded beside
the current one in a worker thread, verified against the pipeline and warmed up, then replaces it
with one reference assignment: a request reads `store.current` once and scores with that object
to the end. What the watcher does when something is off:

- the registry answers that no version is in production: the model is withdrawn (503 saying
  so), since someone took it out of service on purpose;
- the registry is unreachable: the current model keeps serving (fail static), and GET /model
  and the metrics say the registry is down;
- a version fails to load: the current model keeps serving and the version is retried after
  2, 4, 8 ... poll intervals, at most MODEL_RETRY_MAX_SECONDS apart (POST /model/reload retries
  at once).

The same check resolves the shadow (alias SHADOW_ALIAS, `readmission shadow VERSION`): that
version is loaded by the same loader and swapped the same way into `store.shadow`; requests
score it beside production and log its probability, never answer with it. A shadow that fails
to load or cannot be resolved is simply not scored (it is retried at the next check): the shadow
never costs an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from api.metrics import ServingMetrics
from readmission import registry
from readmission.config import Settings
from readmission.data.dataset import synthetic_sample
from readmission.data.validation import validate
from readmission.evaluation import model_card
from readmission.features import normalise
from readmission.monitoring.drift import DriftReference
from readmission.release import production_changes
from readmission.scoring import CompiledScorer, PairedScorer, paired

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 500
COLLECT_AFTER_SWAP_SECONDS = 1.0


@dataclass(frozen=True)
class ServedModel:
    """One loaded, verified model version; never mutated once built."""

    name: str
    version: str
    alias: str | None
    stage: str | None
    run_id: str | None
    metrics: dict[str, float]
    scorer: CompiledScorer
    drift: DriftReference | None
    registered_at: datetime  # in the registry: how old the model is, whatever the process uptime
    card: dict[str, Any] | None = None  # model_card.json of the version's run, if it has one
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def threshold(self) -> float:
        return self.scorer.threshold


@cache
def verification_frame() -> pd.DataFrame:
    """Encounters on which the compiled scorer must match the pipeline before serving."""
    return validate(synthetic_sample(300, seed=20240)).clean


def load_served_model(settings: Settings, version: ModelVersion) -> ServedModel:
    """Download, compile, verify and warm up one registered version (blocking)."""
    model = registry.load_readmission_model(settings, version.version)
    scorer = CompiledScorer(model)
    frame = verification_frame()
    scorer.verify(model, frame)  # raises CompiledScoreMismatch: such a version is never served
    records = normalise(frame.head(20)).to_dict("records")
    scorer.probabilities(records)
    scorer.field_contributions(records[0])
    run_metrics = (
        registry.connect(settings).get_run(version.run_id).data.metrics if version.run_id else {}
    )
    return ServedModel(
        name=settings.model_name,
        version=str(version.version),
        alias=settings.model_alias if settings.model_alias in version.aliases else None,
        stage=version.current_stage,
        run_id=version.run_id,
        metrics={k: float(v) for k, v in run_metrics.items() if math.isfinite(v)},
        scorer=scorer,
        drift=DriftReference.of(model),
        registered_at=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC),
        card=model_card.load(version.run_id) if version.run_id else None,
    )


@dataclass(frozen=True)
class FailedLoad:
    """A production version that failed to load, and when to try it again."""

    version: str
    attempts: int
    retry_at: float  # time.monotonic()


class ModelStore:
    """Holds the served model and the registry watcher's state."""

    def __init__(
        self,
        settings: Settings,
        metrics: ServingMetrics,
        loader: Callable[[Settings, ModelVersion], ServedModel] = load_served_model,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.loader = loader
        self.current: ServedModel | None = None
        self.shadow: ServedModel | None = None  # scored and logged beside `current`, not answered
        self.checked = False  # the first registry check has finished
        self.registry_up = False
        self.production: str | None = None  # the version the registry names, served or not
        self.withdrawn: str | None = None  # the version taken out of production while served
        self.failed: FailedLoad | None = None
        self.load_failures = 0
        self.reloads = 0
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        # The last pair scored together: production, shadow, their PairedScorer (None when
        # their feature spaces differ). Rebuilt when either is swapped.
        self._paired: tuple[ServedModel, ServedModel, PairedScorer | None] | None = None

    def paired(self, model: ServedModel, shadow: ServedModel) -> PairedScorer | None:
        """The scorer of `model` and `shadow` together, the objects a request read (a swap
        during the request leaves them as they were), or None when they read different
        features."""
        cached = self._paired
        if cached is None or cached[0] is not model or cached[1] is not shadow:
            cached = self._paired = (model, shadow, paired(model.scorer, shadow.scorer))
        return cached[2]

    def check_now(self) -> None:
        """Wake the watcher for a registry check now rather than at the end of its interval: an
        MLflow webhook said an alias moved (api/routes/webhooks.py, api/promotion_listener.py)."""
        self._wake.set()

    async def watch(self) -> None:
        """Check the registry now, every MODEL_POLL_SECONDS and whenever woken, until cancelled."""
        while True:
            # Cleared before the check: a wake-up that arrives during it brings another one,
            # since the registry may have moved again after this check read it.
            self._wake.clear()
            try:
                await self.refresh()
            except Exception:  # the watcher must outlive any surprise
                log.exception("model registry check failed unexpectedly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.model_poll_seconds)

    async def refresh(self, retry_now: bool = False) -> None:
        """Ask the registry for the production and shadow versions and act on them (see the
        module's doc); `retry_now` loads a version that failed before without waiting for its
        back-off."""
        async with self._lock:
            await self._refresh_production(retry_now)
            if self.registry_up:
                await self._refresh_shadow()

    async def _refresh_production(self, retry_now: bool) -> None:
        try:
            version = await asyncio.to_thread(registry.production_version, self.settings)
        except Exception as error:
            self._registry_failed(error)
            return
        finally:
            self.checked = True
        self.registry_up = True
        self.metrics.registry_up.set(1)
        production = version.version if version else None
        if production != self.production:
            await asyncio.to_thread(self._notice_change)
        self.production = production
        if version is None:
            self._clear_failure()
            self._withdraw()
            return
        if self.current and self.current.version == version.version:
            self._clear_failure()
            self._follow_labels(version)
            return
        failed = self.failed if self.failed and self.failed.version == version.version else None
        if failed and not retry_now and time.monotonic() < failed.retry_at:
            return
        try:
            served = await asyncio.to_thread(self.loader, self.settings, version)
        except Exception as error:
            self._load_failed(version.version, failed.attempts if failed else 0, error)
            return
        self._swap(served)

    async def _refresh_shadow(self) -> None:
        try:
            version = await asyncio.to_thread(registry.shadow_version, self.settings)
        except Exception as error:  # keep the shadow scored until the registry answers again
            log.warning("shadow version not resolved: %s", _short(str(error)))
            return
        # The production version in shadow of itself would only double the work.
        if version is None or version.version == self.production:
            if self.shadow is not None:
                log.info("shadow version %s no longer scored", self.shadow.version)
            self.shadow = self._paired = None
            return
        if self.shadow is not None and self.shadow.version == version.version:
            return
        try:
            served = await asyncio.to_thread(self.loader, self.settings, version)
        except Exception as error:
            log.warning(
                "shadow version %s not loaded (retried at the next check): %s",
                version.version,
                _short(f"{type(error).__name__}: {error}"),
            )
            self.shadow = self._paired = None
            return
        self.shadow = dataclasses.replace(served, alias=self.settings.shadow_alias)  # the swap
        self._paired = None
        log.info("scoring version %s in shadow", served.version)

    def _notice_change(self) -> None:
        """Record a production change made outside the platform (the MLflow UI) in the ledger;
        changes made by the CLI or the DAG are recorded already and add nothing."""
        try:
            production_changes.notice_outside_changes(self.settings, noticed_by="the serving API")
        except Exception as error:  # the ledger must never stop serving
            log.warning("could not check the promotion ledger: %s", _short(str(error)))

    def _swap(self, served: ServedModel) -> None:
        previous = self.current.version if self.current else None
        self.current = served  # the atomic swap
        self._paired = None  # let the previous model go before the collection below
        self.withdrawn = None
        self._clear_failure()
        self.reloads += 1
        self.metrics.model_swapped(
            served.name,
            served.version,
            served.alias or "",
            served.run_id or "",
            served.registered_at.timestamp(),
        )
        log.info("serving %s version %s (was %s)", served.name, served.version, previous)
        # Move the long-lived objects (libraries, the model) out of the garbage collector's
        # generations, so that its full collections stay short and do not show in tail latency.
        # Unfreeze and collect first: otherwise the previous model and the garbage of loading
        # this one would be frozen too, and never freed. A moment after the swap, not before the
        # first answer: that full collection holds the event loop for most of a second on a busy
        # machine, and a promotion is to be served within one (issue 22).
        asyncio.get_running_loop().call_later(COLLECT_AFTER_SWAP_SECONDS, _collect_and_freeze)

    def _follow_labels(self, version: ModelVersion) -> None:
        """Keep the served version's alias and stage as the registry now says (a promotion
        sets them one after the other; an operator may move either)."""
        served = self.current
        alias = self.settings.model_alias if self.settings.model_alias in version.aliases else None
        if served and (served.alias, served.stage) != (alias, version.current_stage):
            self.current = dataclasses.replace(served, alias=alias, stage=version.current_stage)
            self.metrics.describe_model(
                served.name, served.version, alias or "", served.run_id or ""
            )

    def _clear_failure(self) -> None:
        self.failed = None
        self.last_error = None
        self.metrics.load_failing.set(0)

    def _withdraw(self) -> None:
        if self.current is None:
            return
        self.withdrawn = self.current.version
        self.current = None
        self.metrics.model_withdrawn()
        log.warning(
            "version %s of %s is no longer in production: withdrawn, not serving",
            self.withdrawn,
            self.settings.model_name,
        )

    def _registry_failed(self, error: Exception) -> None:
        self.registry_up = False
        self.metrics.registry_up.set(0)
        serving = self.current.version if self.current else None
        self.last_error = _short(f"model registry unreachable: {error}")
        if serving:
            self.last_error = _short(
                f"model registry unreachable, still serving version {serving} (fail static): "
                f"{error}"
            )
        log.warning("%s", self.last_error)

    def _load_failed(self, version: str, attempts_before: int, error: Exception) -> None:
        self.load_failures += 1
        self.metrics.load_failures.inc()
        attempts = attempts_before + 1
        wait = min(
            self.settings.model_poll_seconds * 2**attempts, self.settings.model_retry_max_seconds
        )
        self.failed = FailedLoad(version, attempts, time.monotonic() + wait)
        self.metrics.load_failing.set(1)
        self.last_error = _short(
            f"version {version} was not loaded ({attempts} attempt{'s' * (attempts > 1)}, "
            f"next in {wait:g} s): {type(error).__name__}: {error}"
        )
        log.error(
            "%s; still serving version %s",
            self.last_error,
            self.current.version if self.current else None,
        )

    def unavailable_reason(self) -> str:
        """Why no model is served, and what to do about it."""
        name, alias = self.settings.model_name, self.settings.model_alias
        if not self.checked:
            return "starting: the production model is being looked up in the registry"
        if self.last_error:
            return f"no model is served: {self.last_error}"
        if self.production:
            return f"version {self.production} of '{name}' is loading; retry shortly"
        promote = (
            f"Promote one with `readmission promote VERSION`, or set the alias '{alias}' on a "
            f"version in the MLflow UI (Models > {name}); this API picks it up within "
            f"{self.settings.model_poll_seconds:g} s."
        )
        if self.withdrawn:
            return (
                f"version {self.withdrawn} of '{name}' was withdrawn: no version has the alias "
                f"'{alias}' (or the stage Production) any more. {promote}"
            )
        return (
            f"no production model: no version of '{name}' has the alias '{alias}' (or the "
            f"stage Production). {promote}"
        )


def _collect_and_freeze() -> None:
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 3] + "..."
