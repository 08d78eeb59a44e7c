"""The promotion policy and every change of the production version.

`evaluate_and_promote` judges the newest version (challenger) against the production one
(champion) on the holdout: quality floors, the champion's AUC, no reliable subgroup far below the
overall AUC, a calibration slope within bounds. Each check is recorded as a tag on the challenger.

`promote`, `rollback` and the checks for changes made outside the platform (the MLflow UI) all
write the promotion ledger, under its lock, in the same step as the registry change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import Connection

from readmission import evaluation, ledger, registry, warehouse
from readmission.config import Settings
from readmission.holdout import fingerprint
from readmission.model import labels

log = logging.getLogger(__name__)
OUTSIDE = "outside the platform (MLflow UI or API)"


class PromotionError(ValueError):
    """A production change that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    challenger_version: str
    champion_version: str | None
    challenger: dict[str, float]
    champion: dict[str, float] | None
    passed: bool
    promoted: bool
    reason: str
    checks: tuple[Check, ...] = ()


def evaluate_and_promote(
    settings: Settings,
    auto_promote: bool | None = None,
    margin: float | None = None,
    by: str = "evaluate-and-promote",
) -> Verdict | None:
    """Score the challenger and the champion on the holdout, record the verdict as tags on the
    challenger, and promote it if every check passes and promotion is on."""
    auto_promote = settings.auto_promote if auto_promote is None else auto_promote
    margin = settings.promotion_margin if margin is None else margin
    notice_outside_changes(settings, noticed_by=by)
    challenger = registry.latest_version(settings)
    if challenger is None:
        return None
    champion = registry.production_version(settings)
    if champion is not None and champion.version == challenger.version:
        # A re-run (or a retry after the alias moved): finish the promotion if a crash cut it
        # short, keep the verdict as recorded, change nothing else.
        if challenger.current_stage != registry.PRODUCTION_STAGE:
            registry.promote(settings, challenger.version)
        reason = f"version {challenger.version} is already in production: nothing changed"
        log.info("challenger v%s: %s", challenger.version, reason)
        recorded = {
            k.removeprefix("challenger_"): float(v)
            for k, v in challenger.tags.items()
            if k in ("challenger_roc_auc", "challenger_log_loss")
        }
        return Verdict(challenger.version, champion.version, recorded, None, True, False, reason)
    holdout = warehouse.clean_rows(settings.warehouse_url, warehouse.HOLDOUT_BATCH)
    y = labels(holdout)
    challenger_model = registry.load_readmission_model(settings, challenger.version)
    ours = evaluation.evaluate_holdout(
        settings, holdout, y, challenger_model.predict_proba(holdout)
    )
    theirs = None
    if champion is not None:
        probability = registry.load_readmission_model(settings, champion.version).predict_proba(
            holdout
        )
        theirs = evaluation.scores(y, probability, 0.5)
    checks = judge(settings, ours, theirs, margin)
    passed = all(c.passed for c in checks)
    failed = [c.detail for c in checks if not c.passed]
    reason = "; ".join(failed) if failed else checks[-1].detail
    promoted = passed and auto_promote
    # The verdict first, the promotion last: a retry after a crash in between finds the same
    # verdict to record again and then promotes; one after the promotion changes nothing.
    _record_verdict(
        settings,
        challenger.version,
        champion.version if champion else None,
        checks,
        passed,
        promoted,
        reason,
        ours,
        theirs,
        holdout,
    )
    if promoted:
        change_production(settings, challenger.version, by, reason)
    log.info(
        "challenger v%s: %s (%s)", challenger.version, "passed" if passed else "rejected", reason
    )
    return Verdict(
        challenger.version,
        champion.version if champion else None,
        ours.scores,
        theirs,
        passed,
        promoted,
        reason,
        tuple(checks),
    )


def judge(
    settings: Settings,
    ours: evaluation.HoldoutEvaluation,
    theirs: dict[str, float] | None,
    margin: float,
) -> list[Check]:
    """Every check of the promotion gate, passed or not; the champion comparison comes last."""
    auc, log_loss = ours.scores["roc_auc"], ours.scores["log_loss"]
    checks = [
        Check(
            "min_auc",
            auc >= settings.min_auc,
            f"holdout AUC {auc:.4f} {'meets' if auc >= settings.min_auc else 'is below'} "
            f"MIN_AUC {settings.min_auc}",
        ),
        Check(
            "max_log_loss",
            log_loss <= settings.max_log_loss,
            f"holdout log-loss {log_loss:.4f} is "
            f"{'within' if log_loss <= settings.max_log_loss else 'above'} "
            f"MAX_LOG_LOSS {settings.max_log_loss}",
        ),
        _subgroup_check(settings, ours),
        _calibration_check(settings, ours),
    ]
    if theirs is None:
        checks.append(Check("champion", True, "no production model yet; quality floors met"))
    elif auc < theirs["roc_auc"] + margin:
        checks.append(
            Check(
                "champion",
                False,
                f"holdout AUC {auc:.4f} does not beat the champion's "
                f"{theirs['roc_auc']:.4f} by the margin {margin}",
            )
        )
    else:
        checks.append(
            Check(
                "champion",
                True,
                f"holdout AUC {auc:.4f} beats the champion's {theirs['roc_auc']:.4f} "
                f"by at least {margin}",
            )
        )
    return checks


def _subgroup_check(settings: Settings, ours: evaluation.HoldoutEvaluation) -> Check:
    floor = ours.roc_auc.roc_auc - settings.gate_subgroup_auc_margin
    judged = [
        (attribute, row)
        for attribute, rows in ours.subgroups.items()
        for row in rows
        if row.reliable and row.roc_auc is not None
    ]
    below = [
        f"{attribute} {row.group} {row.roc_auc:.3f}"
        for attribute, row in judged
        if row.roc_auc is not None and row.roc_auc < floor
    ]
    skipped = sum(len(rows) for rows in ours.subgroups.values()) - len(judged)
    note = f" ({skipped} group(s) too small to judge)" if skipped else ""
    if below:
        return Check(
            "subgroup_auc",
            False,
            f"subgroup AUC below the overall {ours.roc_auc.roc_auc:.3f} minus "
            f"GATE_SUBGROUP_AUC_MARGIN {settings.gate_subgroup_auc_margin}: {', '.join(below)}",
        )
    return Check(
        "subgroup_auc",
        True,
        f"{len(judged)} subgroups within {settings.gate_subgroup_auc_margin} of the overall "
        f"AUC {ours.roc_auc.roc_auc:.3f}{note}",
    )


def _calibration_check(settings: Settings, ours: evaluation.HoldoutEvaluation) -> Check:
    slope = ours.calibration.slope
    low, high = settings.gate_calibration_slope_min, settings.gate_calibration_slope_max
    inside = low <= slope <= high
    return Check(
        "calibration_slope",
        inside,
        f"calibration slope {slope:.3f} is {'within' if inside else 'outside'} "
        f"[GATE_CALIBRATION_SLOPE_MIN {low}, GATE_CALIBRATION_SLOPE_MAX {high}]",
    )


def _record_verdict(
    settings: Settings,
    version: str,
    champion: str | None,
    checks: list[Check],
    passed: bool,
    promoted: bool,
    reason: str,
    ours: evaluation.HoldoutEvaluation,
    theirs: dict[str, float] | None,
    holdout: pd.DataFrame,
) -> None:
    tags = {
        "validation_status": "passed" if passed else "rejected",
        "validation_reason": reason,
        **{f"check_{c.name}": f"{'passed' if c.passed else 'failed'}: {c.detail}" for c in checks},
        "challenger_roc_auc": f"{ours.scores['roc_auc']:.6f}",
        "challenger_roc_auc_ci": f"{ours.roc_auc.low:.6f}-{ours.roc_auc.high:.6f}",
        "challenger_log_loss": f"{ours.scores['log_loss']:.6f}",
        "challenger_calibration_slope": f"{ours.calibration.slope:.6f}",
        "champion_version": champion or "none",
        "champion_roc_auc": f"{theirs['roc_auc']:.6f}" if theirs else "none",
        # Champion and challenger on exactly the same rows: today's holdout, named by its print.
        "validation_holdout_rows": str(len(holdout)),
        "validation_holdout_fingerprint": fingerprint(holdout["encounter_id"]),
        "promoted_by": "auto" if promoted else "manual",
    }
    client = registry.connect(settings)
    for key, value in tags.items():
        client.set_model_version_tag(settings.model_name, version, key, value)


def change_production(
    settings: Settings, version: str | int, by: str, reason: str
) -> ledger.Promotion | None:
    """Make `version` production and record the change; None if it already is."""
    version = str(version)
    with ledger.locked(settings.warehouse_url) as conn:
        current, _ = _notice(conn, settings, noticed_by=by)
        if current == version:
            return None
        _promote(settings, version)
        entry = ledger.record(conn, settings.model_name, current, version, by, reason)
    log.info("production %s: v%s -> v%s by %s", settings.model_name, current, version, by)
    return entry


def rollback(settings: Settings, by: str, reason: str | None = None) -> ledger.Promotion:
    """Return production to the version that was production before the current one."""
    with ledger.locked(settings.warehouse_url) as conn:
        current, _ = _notice(conn, settings, noticed_by=by)
        last = ledger.latest(conn, settings.model_name)
        if current is None or last is None:
            raise PromotionError(
                f"no version of {settings.model_name} is in production: nothing to roll back"
            )
        previous = last.from_version
        if previous is None:
            raise PromotionError(
                f"version {current} was the first production version of {settings.model_name}: "
                "there is no earlier one to return to (promote a version instead)"
            )
        _promote(settings, previous)
        entry = ledger.record(
            conn,
            settings.model_name,
            current,
            previous,
            by,
            reason or f"rollback: version {previous} was production before version {current}",
        )
    log.info("rolled %s back: v%s -> v%s by %s", settings.model_name, current, previous, by)
    return entry


def notice_outside_changes(settings: Settings, noticed_by: str) -> ledger.Promotion | None:
    """Record a production change made outside the platform; None when there is none."""
    with ledger.locked(settings.warehouse_url) as conn:
        _, noticed = _notice(conn, settings, noticed_by)
    return noticed


def _notice(
    conn: Connection, settings: Settings, noticed_by: str
) -> tuple[str | None, ledger.Promotion | None]:
    """The production version now, and the entry recording it if the ledger did not know it."""
    production = registry.production_version(settings)
    # str: the SQLite store returns versions as int, the REST API as str
    now = str(production.version) if production else None
    last = ledger.latest(conn, settings.model_name)
    recorded = last.to_version if last else None
    if now == recorded:
        return now, None
    change = f"version {now}" if now else "no version"
    entry = ledger.record(
        conn,
        settings.model_name,
        recorded,
        now,
        f"mlflow registry, {OUTSIDE}",
        f"production was set to {change} {OUTSIDE}; noticed by {noticed_by}",
    )
    log.warning(
        "production of %s changed %s: v%s -> v%s", settings.model_name, OUTSIDE, recorded, now
    )
    return now, entry


def _promote(settings: Settings, version: str) -> None:
    try:
        registry.promote(settings, version)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise PromotionError(
                f"{settings.model_name} has no version {version}: see `readmission status`"
            ) from error
        raise
