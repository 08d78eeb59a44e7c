"""Every change of the production version: a promotion, a rollback, and the notice of a change
made outside the platform (the MLflow UI or API), each recorded in the promotion ledger.

`change_production` and `rollback` write the ledger, under its lock, in the same step as the
registry change. Before the alias moves, the change is written as an intent tag on the version
going in, naming the ledger row it follows; whoever next holds the lock and finds the alias moved
without its row (a process killed in between) records the row from the intent instead of taking
the move for one made outside the platform.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from mlflow.exceptions import MlflowException
from sqlalchemy.engine import Connection

from readmission import change_control, registry, registry_reader
from readmission.config import Settings
from readmission.release import ledger

log = logging.getLogger(__name__)


OUTSIDE = "outside the platform (MLflow UI or API)"


INTENT_TAG = "production_change"  # on the version going in, written before the alias moves


class PromotionError(ValueError):
    """A production change that cannot be made; the message says why and what to do."""


def change_production(
    settings: Settings,
    version: str | int,
    by: str,
    reason: str,
    action: str = ledger.MANUAL,
    evidence: ledger.Evidence | None = None,
    authority: ledger.Authority | None = None,
) -> ledger.ProductionChange | None:
    """Make `version` production and record the change; None if it already is. `authority`:
    the plan and rule (or comment) the change was made under; default, the plan in force."""
    version = str(version)
    with ledger.locked(settings.warehouse_url) as conn:
        current, _ = _notice(conn, settings, noticed_by=by)
        if current == version:
            return None
        entry = _move(conn, settings, current, version, by, reason, action, evidence, authority)
    log.info("production %s: v%s -> v%s by %s", settings.model_name, current, version, by)
    return entry


def rollback(
    settings: Settings, by: str, reason: str | None = None, to: str | None = None
) -> ledger.ProductionChange:
    """Take the production version out (marked: the gate never promotes it again) and return
    to `to`, or to the last version production had before it that was not rolled back itself."""
    with ledger.locked(settings.warehouse_url) as conn:
        current, noticed = _notice(conn, settings, noticed_by=by)
        if (
            noticed is not None
            and noticed.action == ledger.ROLLBACK
            and (to is None or noticed.to_version == str(to))
        ):
            # A rollback killed after the alias moved, finished just now: this re-run of it
            # must not roll back once more.
            return noticed
        if current is None:
            raise PromotionError(
                f"no version of {settings.model_name} is in production: nothing to roll back"
            )
        target = str(to) if to is not None else _rollback_target(conn, settings, current)
        if target == current:
            raise PromotionError(f"version {target} is the production version already")
        entry = _move(
            conn,
            settings,
            current,
            target,
            by,
            reason or f"rollback: version {current} taken out of production, {target} back",
            ledger.ROLLBACK,
        )
    log.info("rolled %s back: v%s -> v%s by %s", settings.model_name, current, target, by)
    return entry


def _rollback_target(conn: Connection, settings: Settings, current: str) -> str:
    changes = ledger.entries_of(conn, settings.model_name)
    for change in reversed(changes):
        candidate = change.from_version
        if (
            candidate is not None
            and candidate != current
            and ledger.rolled_back(conn, settings.model_name, candidate) is None
        ):
            return candidate
    if len(changes) <= 1:
        raise PromotionError(
            f"version {current} was the first production version of {settings.model_name}: "
            "there is no earlier one to return to (promote a version instead)"
        )
    raise PromotionError(
        f"every version production had before version {current} was rolled back: name one "
        "(readmission rollback --to VERSION) or promote one"
    )


def _move(
    conn: Connection,
    settings: Settings,
    current: str | None,
    target: str,
    by: str,
    reason: str,
    action: str,
    evidence: ledger.Evidence | None = None,
    authority: ledger.Authority | None = None,
) -> ledger.ProductionChange:
    """Move production from `current` to `target` and add the ledger row (caller holds the
    lock). The intent goes onto `target` first, so a kill between the alias and the row is
    recorded as this change by the next holder of the lock (see `_notice`)."""
    authority = authority or ledger.Authority(change_control.file_sha256(settings))
    last = ledger.latest(conn, settings.model_name)
    intent = {
        "after": last.id if last else 0,
        "from": current,
        "by": by,
        "reason": reason,
        "action": action,
        "evidence": evidence.as_dict() if evidence else None,
        "authority": vars(authority),
    }
    client = registry.connect(settings)
    try:
        client.set_model_version_tag(settings.model_name, target, INTENT_TAG, json.dumps(intent))
        registry.promote(settings, target)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise PromotionError(
                f"{settings.model_name} has no version {target}: see `readmission status`"
            ) from error
        raise
    entry = ledger.record(
        conn, settings.model_name, current, target, by, reason, action, evidence, authority
    )
    if action == ledger.ROLLBACK and current is not None:
        _mark_rolled_back(settings, current, entry)
    return entry


def _mark_rolled_back(settings: Settings, version: str, entry: ledger.ProductionChange) -> None:
    """The mark people see in the registry; the gate's bar is the ledger row itself."""
    registry.connect(settings).set_model_version_tag(
        settings.model_name,
        version,
        registry_reader.ROLLED_BACK_TAG,
        f"{entry.time:%Y-%m-%d %H:%M:%S} UTC by {entry.by} (back to v{entry.to_version}): "
        f"{entry.reason}",
    )


def notice_outside_changes(settings: Settings, noticed_by: str) -> ledger.ProductionChange | None:
    """Record a production change made outside the platform (or one whose recording a kill cut
    short); None when there is none."""
    with ledger.locked(settings.warehouse_url) as conn:
        _, noticed = _notice(conn, settings, noticed_by)
    return noticed


def _notice(
    conn: Connection, settings: Settings, noticed_by: str
) -> tuple[str | None, ledger.ProductionChange | None]:
    """The production version now, and the entry recording it if the ledger did not know it."""
    production = registry.production_version(settings)
    # str: the SQLite store returns versions as int, the REST API as str
    now = str(production.version) if production else None
    last = ledger.latest(conn, settings.model_name)
    recorded = last.to_version if last else None
    if now == recorded:
        return now, None
    intent = _intent(production.tags) if production else None
    if intent and intent["after"] == (last.id if last else 0) and intent["from"] == recorded:
        evidence = intent["evidence"]
        entry = ledger.record(
            conn,
            settings.model_name,
            recorded,
            now,
            intent["by"],
            intent["reason"],
            intent["action"],
            ledger.Evidence(
                evidence["delta_roc_auc"],
                tuple(evidence["delta_roc_auc_ci"]),
                evidence["holdout_fingerprint"],
            )
            if evidence
            else None,
            # Intents written before the ledger named the plan carry no authority.
            ledger.Authority(**intent.get("authority") or {"plan_sha256": None}),
        )
        if entry.action == ledger.ROLLBACK and recorded is not None:
            _mark_rolled_back(settings, recorded, entry)
        log.warning(
            "production of %s: v%s -> v%s by %s was cut short before its ledger row; recorded "
            "it (noticed by %s)",
            settings.model_name,
            recorded,
            now,
            entry.by,
            noticed_by,
        )
        return now, entry
    change = f"version {now}" if now else "no version"
    entry = ledger.record(
        conn,
        settings.model_name,
        recorded,
        now,
        f"mlflow registry, {OUTSIDE}",
        f"production was set to {change} {OUTSIDE}; noticed by {noticed_by}",
        ledger.OUTSIDE,
        authority=ledger.Authority(change_control.file_sha256(settings)),
    )
    log.warning(
        "production of %s changed %s: v%s -> v%s", settings.model_name, OUTSIDE, recorded, now
    )
    return now, entry


def _intent(tags: Mapping[str, str]) -> dict[str, Any] | None:
    raw = tags.get(INTENT_TAG)
    if not raw:
        return None
    try:
        found: dict[str, Any] = json.loads(raw)
    except json.JSONDecodeError:  # edited by hand in the MLflow UI: not ours to trust
        return None
    return found
