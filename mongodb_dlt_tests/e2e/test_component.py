"""The `dg` route, as a Dagster user takes it: a throwaway dg project, `dg scaffold defs`, a YAML edit,
`dg check defs`, `dg list defs`, `dg launch --assets`, all as subprocesses, into a DuckDB table.

Each test has a dg project (folder, Dagster home, DuckDB files) of its own; they read the same documents from one
stand-in. The second test's commands start with the module, in a thread, and run while the first test runs its
own (``two_components_run``): the test then checks what they produced, as it would have step by step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import mongomock
import pytest

from mongodb_dlt.config import load_config
from mongodb_dlt.testing import MongoStandIn

BIN = Path(sys.executable).parent
COMPONENT = "mongodb_dlt.MongoDltComponent"


class DgProject:
    def __init__(self, root: Path, uri: str) -> None:
        self.root = root
        self.defs = root / "src" / "myproj" / "defs"
        self.defs.mkdir(parents=True)
        (root / "pyproject.toml").write_text(
            '[project]\nname = "myproj"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n\n'
            '[tool.dg]\ndirectory_type = "project"\n\n[tool.dg.project]\nroot_module = "myproj"\n'
        )
        (root / "src" / "myproj" / "__init__.py").write_text("")
        (self.defs / "__init__.py").write_text("")
        (root / "src" / "myproj" / "definitions.py").write_text(
            "from pathlib import Path\n\nimport dagster as dg\n\n\n@dg.definitions\ndef defs() -> dg.Definitions:\n"
            "    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)\n"
        )
        (root / "dagster_home").mkdir()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_DLT_", "DAGSTER_"))},
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            # the project's code first, then that of the test run (a checkout on PYTHONPATH tests its own mongodb_dlt)
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root / "src"), os.environ.get("PYTHONPATH")])),
            "MONGODB_URI": uri,
            "DAGSTER_HOME": str(root / "dagster_home"),
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "COLUMNS": "200",
        }

    def dg(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN / "dg"), *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300
        )
        if ok:
            assert done.returncode == 0, f"dg {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    def write(self, relative: str, text: str) -> Path:
        path = self.defs / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path


@pytest.fixture(scope="module")
def shop() -> Iterator[MongoStandIn]:
    """The module's stand-in: every project reads these documents, and none writes to MongoDB."""
    with MongoStandIn(mongomock.MongoClient()) as standin:
        standin.client.shop.orders.insert_many([{"_id": i, "lines": [{"sku": f"s{i}"}]} for i in range(12)])
        standin.client.crm.contacts.insert_many([{"_id": i} for i in range(3)])
        yield standin


@pytest.fixture
def dg_project(tmp_path: Path, shop: MongoStandIn) -> DgProject:
    return DgProject(tmp_path / "myproj", shop.uri)


def test_scaffold_check_list_and_launch_into_duckdb(dg_project: DgProject) -> None:
    dg_project.dg("scaffold", "defs", COMPONENT, "mongo_ingest")
    defs_yaml = dg_project.defs / "mongo_ingest" / "defs.yaml"
    assert defs_yaml.read_text().startswith(f"type: {COMPONENT}\n")
    scaffolded = load_config(defs_yaml, section=["attributes"])  # a working example as written
    assert list(scaffolded.databases) == ["sample_mflix"]

    # the user edits the YAML only: their database, and a collection with a typo in an option
    text = defs_yaml.read_text().replace("sample_mflix: [movies, comments]", "shop:\n      collections:\n"
                                         "        orders: {write_disposition: upsrt}")
    defs_yaml.write_text(text)
    failed = dg_project.dg("check", "defs", ok=False)
    assert failed.returncode != 0
    line = next(n for n, text in enumerate(defs_yaml.read_text().splitlines(), 1) if "upsrt" in text)
    # as dg shows a schema error: file:line, key and problem over the lines around it, without a stack of causes
    shown = failed.stdout + failed.stderr
    assert (f"{defs_yaml}:{line} - {COMPONENT} attributes.databases.shop.collections.orders.write_disposition "
            "'upsrt' is not one of merge, append, replace") in shown
    assert f"{line} |         orders: {{write_disposition: upsrt}}" in shown
    assert "^ 'upsrt' is not one of merge, append, replace" in shown
    assert "The above exception was caused by" not in shown and "ComponentTreeException" not in shown

    defs_yaml.write_text(text.replace("upsrt", "merge"))
    listed = dg_project.dg("list", "defs", "--json")
    assets = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
    assert assets == {"raw_shop/orders"}

    dg_project.dg("launch", "--assets", "raw_shop/orders")
    # the relative DuckDB path resolves against the project root
    with duckdb.connect(str(dg_project.root / "data" / "warehouse.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*) from mongo_shop.orders").fetchone() == (12,)
        assert connection.execute("select count(*) from mongo_shop.orders__lines").fetchone() == (12,)


TWO_COMPONENTS_TEST = "test_two_components_and_the_users_own_assets_share_one_code_location"


@dataclass(frozen=True)
class TwoComponents:
    """What the user's steps of test_two_components_... produced."""

    project: DgProject
    config: Path
    listed: subprocess.CompletedProcess[str]
    failed: subprocess.CompletedProcess[str]


def two_components(dg_project: DgProject) -> TwoComponents:
    """Two components (one inline, one pointing at a databases.yaml) and an asset of the user's own: `dg list defs`,
    `dg launch` of both collections, then a typo in the referenced file and `dg check defs`."""
    dg_project.write(
        "cluster_a/defs.yaml",
        f"""
        type: {COMPONENT}
        attributes:
          destination: {{type: duckdb, path: data/a.duckdb}}
          databases:
            shop: [orders]
        """,
    )
    config = dg_project.write(
        "cluster_b/databases.yaml",
        """
        destination: {type: duckdb, path: data/b.duckdb}
        databases:
          crm: [contacts]
        """,
    )
    dg_project.write("cluster_b/defs.yaml", f"type: {COMPONENT}\nattributes:\n  config_path: databases.yaml\n")
    dg_project.write(
        "reports.py",
        """
        import dagster as dg


        @dg.asset(deps=[dg.AssetKey(["raw_shop", "orders"])])
        def order_report() -> None:
            pass
        """,
    )
    listed = dg_project.dg("list", "defs", "--json")
    dg_project.dg("launch", "--assets", "raw_shop/orders,raw_crm/contacts")
    # an error in the referenced file
    config.write_text(config.read_text().replace("crm: [contacts]", "crm: {collections: [contacts], shedule: x}"))
    failed = dg_project.dg("check", "defs", ok=False)
    return TwoComponents(dg_project, config, listed, failed)


@pytest.fixture(scope="module", autouse=True)
def two_components_run(
    request: pytest.FixtureRequest, shop: MongoStandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Future[TwoComponents] | None]:
    """``two_components`` in a project of its own, started in a thread with the module's first test: its dg
    processes run on the other core meanwhile. Not started when its test is not selected."""
    if not any(item.name == TWO_COMPONENTS_TEST for item in request.session.items):
        yield None
        return
    dg_project = DgProject(tmp_path_factory.mktemp("two_components") / "myproj", shop.uri)
    with ThreadPoolExecutor(1, thread_name_prefix="two-components") as pool:
        yield pool.submit(two_components, dg_project)


def test_two_components_and_the_users_own_assets_share_one_code_location(
    two_components_run: Future[TwoComponents] | None,
) -> None:
    assert two_components_run is not None
    run = two_components_run.result()
    listed = json.loads(run.listed.stdout)
    assert {asset["asset_key"] for asset in listed["assets"]} == {"raw_shop/orders", "raw_crm/contacts", "order_report"}
    assert {r["name"] for r in listed.get("resources", [])} >= {"mongodb_dlt_cluster_a", "mongodb_dlt_cluster_b"}

    # both launched collections landed, each in its component's DuckDB file
    for name, table, rows in (("a", "mongo_shop.orders", 12), ("b", "mongo_crm.contacts", 3)):
        with duckdb.connect(str(run.project.root / "data" / f"{name}.duckdb"), read_only=True) as connection:
            assert connection.execute(f"select count(*) from {table}").fetchone() == (rows,)

    # an error in the referenced file names that file, its line and key
    message = f"{run.config}:4 - {COMPONENT} databases.crm.shedule unknown key 'shedule'"
    assert message in run.failed.stdout + run.failed.stderr
    assert "The above exception was caused by" not in run.failed.stdout + run.failed.stderr
