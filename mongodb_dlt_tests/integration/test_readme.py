"""README's Python snippet, executed exactly as the README prints it."""

from __future__ import annotations

import dagster as dg

from mongodb_dlt.testing import MongoStandIn
from mongodb_dlt_tests.conftest import Project
from mongodb_dlt_tests.readme import README, python_snippet


def test_the_embedding_snippet_runs_as_written(project: Project, standin: MongoStandIn) -> None:
    standin.client.shop.orders.insert_many([{"_id": i, "lines": [{"sku": "a"}]} for i in range(7)])
    (project.root / "config").mkdir()
    (project.root / "config" / "databases.yaml").write_text(
        f"destination: {{type: duckdb, path: {project.duckdb_path}}}\ndatabases:\n  shop: [orders]\n"
    )
    namespace: dict[str, object] = {}
    exec(compile(python_snippet("In your own Definitions"), str(README), "exec"), namespace)
    defs = namespace["defs"]
    assert isinstance(defs, dg.Definitions)

    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance)
    assert result.success
    assert project.scalar("SELECT count(*) FROM mongo_shop.orders") == 7
