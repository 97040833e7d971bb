"""Runs through Dagster the way users run it: the multiprocess executor via ``execute_job``, and the UI's
GraphQL mutations (launch, re-execute from asset failure) against a workspace that loads
``mongodb_dlt.definitions``, with runs launched as subprocesses by the instance's run launcher."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.workspace.context import WorkspaceRequestContext
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from mongodb_dlt.definitions import ALL_COLLECTIONS_JOB

LAUNCH_RUN = """
mutation($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
  }
}
"""

REEXECUTE = """
mutation($reexecutionParams: ReexecutionParams) {
  launchPipelineReexecution(reexecutionParams: $reexecutionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
  }
}
"""


def execute(instance: dg.DagsterInstance, selection: Sequence[dg.AssetKey] | None = None) -> dg.DagsterRun:
    """Runs the assets (all, or ``selection``) with the definitions' multiprocess executor."""
    with dg.execute_job(
        # Every step process imports mongodb_dlt.definitions and rebuilds from MONGODB_DLT_CONFIG, as dagster does.
        ReconstructableRepository.for_module("mongodb_dlt.definitions", "defs").get_reconstructable_job(
            ALL_COLLECTIONS_JOB
        ),
        instance=instance,
        asset_selection=list(selection) if selection else None,
        raise_on_error=False,
    ) as result:
        return result.dagster_run


def materialization_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any]:
    event = instance.get_latest_materialization_event(key)
    assert event is not None and event.asset_materialization is not None, f"{key} was never materialized"
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def materialized_keys(instance: dg.DagsterInstance, run_id: str) -> set[dg.AssetKey]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return {record.event_log_entry.dagster_event.asset_key for record in records}


def step_failure_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    return [record.event_log_entry.dagster_event.step_failure_data.error.message for record in records]


@contextmanager
def graphql(instance: dg.DagsterInstance, root: Path) -> Iterator[WorkspaceRequestContext]:
    workspace = root / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": "mongodb_dlt.definitions"}]}))
    with define_out_of_process_context(str(workspace), None, instance) as context:
        yield context


def _run_id(result: Any, field: str) -> str:
    assert result.errors is None, result.errors
    payload = result.data[field]
    assert payload["__typename"] == "LaunchRunSuccess", payload
    return payload["run"]["runId"]


def launch(context: WorkspaceRequestContext, selection: Sequence[dg.AssetKey]) -> str:
    location = context.code_location_names[0]
    result = execute_dagster_graphql(
        context,
        LAUNCH_RUN,
        {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": location,
                    "repositoryName": "__repository__",
                    "jobName": ALL_COLLECTIONS_JOB,
                    "assetSelection": [{"path": key.path} for key in selection],
                },
                "runConfigData": {},
            }
        },
    )
    return _run_id(result, "launchRun")


def reexecute_from_asset_failure(context: WorkspaceRequestContext, parent_run_id: str) -> str:
    result = execute_dagster_graphql(
        context,
        REEXECUTE,
        {"reexecutionParams": {"parentRunId": parent_run_id, "strategy": "FROM_ASSET_FAILURE"}},
    )
    return _run_id(result, "launchPipelineReexecution")


def wait_for_run(instance: dg.DagsterInstance, run_id: str, timeout: float = 180) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run
        time.sleep(0.1)
    raise TimeoutError(f"run {run_id} did not finish in {timeout}s")
