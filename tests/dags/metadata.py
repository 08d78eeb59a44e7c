"""What Airflow's metadata database recorded about a DAG run: task states, XComs, Asset events,
and the runs those events queued."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select


def task_states(run: Any) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id
            )
        )
        return {ti.task_id: str(ti.state) for ti in tis}


def returned(run: Any, task_id: str) -> Any:
    """What a task of `run` returned (its XCom)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value"
            )
        ).first()
        return XComModel.deserialize_value(row) if row is not None else None


def asset_events(run: Any, uri: str) -> list[dict[str, Any]]:
    """The extras of the events that `run` emitted on the Asset `uri`."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri, AssetEvent.source_run_id == run.run_id)
        )
        return [dict(e.extra) for e in events]


def tries(run: Any, task_id: str) -> int:
    """How many times a task of `run` was tried."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalars(
            select(TaskInstance.try_number).where(
                TaskInstance.dag_id == run.dag_id,
                TaskInstance.run_id == run.run_id,
                TaskInstance.task_id == task_id,
            )
        ).one()


def queued_runs() -> set[tuple[str, str]]:
    """(DAG, Asset URI) of every run that Asset events queued and no scheduler has started:
    Airflow's own record of which DAGs an event schedules."""
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(
            select(AssetDagRunQueue.target_dag_id, AssetModel.uri).join(
                AssetModel, AssetDagRunQueue.asset_id == AssetModel.id
            )
        )
        return {(dag_id, uri) for dag_id, uri in rows}


def forget_queued_runs() -> None:
    """Drop the queued runs that earlier `dag.test()` runs left (no scheduler starts them here),
    so `queued_runs` then shows what the next run queues."""
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session

    with create_session() as session:
        session.execute(delete(AssetDagRunQueue))
