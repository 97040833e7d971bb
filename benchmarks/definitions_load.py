"""How long Dagster definitions take to build from a large YAML (100 databases x 50 collections by default),
against a reference measured in the same run: the same AssetSpecs as plain multi-assets, without check specs,
pools, op tags or resources, built and resolved the way any Dagster project would. Machines are noisy: compare the
ratio (with checks / without), not the times.

    .venv/bin/python benchmarks/definitions_load.py [--databases 100] [--collections 50] [--repeat 1]

Also measured: what a code location pays, ``mongodb_dlt.definitions.defs`` from the YAML to the resolved asset graph
(it resolves while the garbage collector is paused), against the reference plus the YAML's load_config. With
``--repeat``, each round measures all three (which goes first rotates) and the best round of each is shown.
"""

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from mongodb_dlt.config import CONFIG_PATH_ENV, ProjectConfig, load_config
from mongodb_dlt.definitions import build_definitions, defs
from mongodb_dlt.factory import collection_specs
from mongodb_dlt.naming import MongoDltTranslator, op_name


def write_yaml(path: Path, databases: int, collections: int) -> None:
    lines = ["defaults:", "  connection_url: ${MONGODB_URI}", "databases:"]
    for d in range(databases):
        lines.append(f"  db_{d:03d}:")
        lines.append("    collections:")
        for c in range(collections):
            options = "{incremental: {cursor_field: updated_at}, write_disposition: append}" if c % 5 == 0 else "{}"
            lines.append(f"      coll_{c:02d}: {options}")
    path.write_text("\n".join(lines) + "\n")


@dataclass
class Timing:
    load: float
    build: float
    resolve: float
    assets: int = 0
    jobs: int = 0

    @property
    def definitions(self) -> float:
        """Build and resolve: what the ratio compares (the YAML is read once, by the measurement with checks)."""
        return self.build + self.resolve


def with_checks(path: Path) -> tuple[Timing, ProjectConfig]:
    started = time.perf_counter()
    config = load_config(path)
    parsed = time.perf_counter()
    defs = build_definitions(config)
    built = time.perf_counter()
    repository = defs.get_repository_def()
    asset_graph = repository.asset_graph
    resolved = time.perf_counter()
    assets, jobs = len(list(asset_graph.get_all_asset_keys())), len(repository.get_all_jobs())
    return Timing(parsed - started, built - parsed, resolved - built, assets, jobs), config


def plain_multi_assets(config: ProjectConfig) -> Iterator[dg.AssetsDefinition]:
    translator = MongoDltTranslator()
    for database in config.databases.values():

        @dg.multi_asset(
            name=op_name(database.name), specs=collection_specs(config, database, translator), can_subset=True
        )
        def _load(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
            yield from ()  # only built, never run

        yield _load


def reference(config: ProjectConfig) -> Timing:
    started = time.perf_counter()
    defs = dg.Definitions(assets=list(plain_multi_assets(config)))
    built = time.perf_counter()
    repository = defs.get_repository_def()
    asset_graph = repository.asset_graph
    resolved = time.perf_counter()
    return Timing(0.0, built - started, resolved - built, len(list(asset_graph.get_all_asset_keys())))


def code_location(path: Path) -> float:
    os.environ[CONFIG_PATH_ENV] = str(path)
    started = time.perf_counter()
    repository = defs().get_repository_def()
    repository.asset_graph.get_all_asset_keys()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--databases", type=int, default=100)
    parser.add_argument("--collections", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the best of each is shown")
    args = parser.parse_args()
    checked: list[Timing] = []
    plain: list[Timing] = []
    located: list[float] = []
    measures = ["checks", "plain", "code location"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "databases.yaml"
        write_yaml(path, args.databases, args.collections)
        config: ProjectConfig | None = None
        for round_ in range(args.repeat):
            # the first round reads the YAML first (the reference builds from it); then the order rotates
            for measure in measures[round_ % 3 :] + measures[: round_ % 3]:
                # each measurement starts from a collected heap: nothing the previous one built is left to walk
                gc.collect()
                if measure == "checks":
                    timing, config = with_checks(path)
                    checked.append(timing)
                elif measure == "plain":
                    assert config is not None
                    plain.append(reference(config))
                else:
                    located.append(code_location(path))
    best = min(checked, key=lambda t: t.load + t.definitions)
    best_plain = min(plain, key=lambda t: t.definitions)
    print(f"{args.databases} databases x {args.collections} collections ({best.assets} assets, {best.jobs} jobs)")
    print(f"load_config:          {best.load:6.2f} s")
    print(f"build_definitions:    {best.build:6.2f} s")
    print(f"resolve repository:   {best.resolve:6.2f} s")
    print(f"total:                {best.load + best.definitions:6.2f} s")
    print(f"with checks (build + resolve):          {best.definitions:6.2f} s")
    print(
        f"reference, no checks (build + resolve): {best_plain.definitions:6.2f} s "
        f"(the same {best_plain.assets} AssetSpecs as plain multi-assets)"
    )
    print(f"ratio with checks / without:            {best.definitions / best_plain.definitions:6.2f}")
    print(
        f"code location (definitions.defs):       {min(located):6.2f} s, "
        f"ratio to load_config + reference: {min(located) / (best.load + best_plain.definitions):.2f}"
    )


if __name__ == "__main__":
    main()
