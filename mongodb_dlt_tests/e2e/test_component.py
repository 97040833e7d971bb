"""The `dg` route, as a Dagster user takes it: a throwaway dg project, `dg scaffold defs`, a YAML edit,
`dg check defs`, `dg list defs`, `dg launch --assets`, all as subprocesses, into a DuckDB table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
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
            "PYTHONPATH": str(root / "src"),
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


@pytest.fixture
def dg_project(tmp_path: Path, standin: MongoStandIn) -> DgProject:
    standin.client.shop.orders.insert_many([{"_id": i, "lines": [{"sku": f"s{i}"}]} for i in range(12)])
    standin.client.crm.contacts.insert_many([{"_id": i} for i in range(3)])
    return DgProject(tmp_path / "myproj", standin.uri)


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
    assert (f"{defs_yaml}, line {line}, key attributes.databases.shop.collections.orders.write_disposition: "
            "'upsrt' is not one of merge, append, replace") in failed.stdout + failed.stderr

    defs_yaml.write_text(text.replace("upsrt", "merge"))
    listed = dg_project.dg("list", "defs", "--json")
    assets = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
    assert assets == {"raw_shop/orders"}

    dg_project.dg("launch", "--assets", "raw_shop/orders")
    # the relative DuckDB path resolves against the project root
    with duckdb.connect(str(dg_project.root / "data" / "warehouse.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*) from mongo_shop.orders").fetchone() == (12,)
        assert connection.execute("select count(*) from mongo_shop.orders__lines").fetchone() == (12,)


def test_two_components_and_the_users_own_assets_share_one_code_location(dg_project: DgProject) -> None:
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
    listed = json.loads(dg_project.dg("list", "defs", "--json").stdout)
    assert {asset["asset_key"] for asset in listed["assets"]} == {"raw_shop/orders", "raw_crm/contacts", "order_report"}
    assert {r["name"] for r in listed.get("resources", [])} >= {"mongodb_dlt_cluster_a", "mongodb_dlt_cluster_b"}

    dg_project.dg("launch", "--assets", "raw_shop/orders,raw_crm/contacts")
    for name, table, rows in (("a", "mongo_shop.orders", 12), ("b", "mongo_crm.contacts", 3)):
        with duckdb.connect(str(dg_project.root / "data" / f"{name}.duckdb"), read_only=True) as connection:
            assert connection.execute(f"select count(*) from {table}").fetchone() == (rows,)

    # an error in the referenced file names that file, its line and key
    config.write_text(config.read_text().replace("crm: [contacts]", "crm: {collections: [contacts], shedule: x}"))
    failed = dg_project.dg("check", "defs", ok=False)
    assert f"{config}, line 4, key databases.crm.shedule: unknown key 'shedule'" in failed.stdout + failed.stderr
