"""The micro-batcher's settings, measured: BATCH_WINDOW_MS x BATCH_MAX_SIZE on the OpenVINO engines.

For each engine, one `main.py serve` per (window, max size) pair runs at
once, each on its own copy of that engine's imported store; then, in rounds,
N clients send search/file back to back to each service in turn, a few
seconds per client level, and every figure is the median over the rounds.
On a shared, noisy 2-core machine what counts is what the settings change
measured in the same minutes: the CPU one request costs (service CPU seconds
/ requests answered, far less disturbed by other processes than wall-clock
rates), and the throughput and p50 of the pairs side by side. The defaults in
conf/settings.py are chosen from this table (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.cli import rnd
from bench.engines import ENGINES
from bench.service import Service, load_test
from conf.settings import Settings

log = logging.getLogger("bench.batching")


@dataclass(frozen=True)
class SweepPlan:
    """Which engines, (window ms, max size) pairs and client counts, for how long, and how many rounds."""

    engines: tuple[str, ...] = ("ov-fp32", "ov-int8")
    pairs: tuple[tuple[float, int], ...] = ((0.0, 32), (2.0, 32), (5.0, 32), (2.0, 8), (2.0, 16))
    clients: tuple[int, ...] = (4, 16)  # a lone client is not batched: its request starts at once
    seconds: float = 4.0
    warmup: float = 1.0
    rounds: int = 2

    @classmethod
    def smoke(cls) -> SweepPlan:
        """Every code path in seconds: for the test suite."""
        return cls(engines=("ov-int8",), pairs=((0.0, 32), (2.0, 8)), clients=(2,), seconds=1.0, warmup=0.3, rounds=1)


def cpu_ms_per_request(level: dict[str, Any]) -> float | None:
    """The service's CPU milliseconds per completed request at a load level."""
    if not level.get("throughput_rps"):
        return None
    return rnd(level["service_cores"] * 1000.0 / level["throughput_rps"])


def start_pair_services(
    store: Path, settings: Settings, pairs: Sequence[tuple[float, int]], workdir: Path
) -> list[Service]:
    """One service per pair, all running, each on its own copy of the imported store (Milvus Lite locks it)."""
    services: list[Service] = []
    try:
        for window_ms, max_size in pairs:
            folder = workdir / f"w{window_ms:g}-m{max_size}"
            if not folder.exists():
                shutil.copytree(store, folder / "milvus.db")
            tuned = settings.model_copy(update={"batch_window_ms": window_ms, "batch_max_size": max_size})
            services.append(Service(folder, tuned, "sweep"))
            services[-1].start()
    except BaseException:
        for svc in services:
            svc.stop()
        raise
    return services


def _row(window_ms: float, max_size: int, clients: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One pair at one client count: the median over rounds (errors summed)."""

    def med(name: str) -> float | None:
        values = [r[name] for r in runs if r.get(name) is not None]
        return rnd(float(np.median(values))) if values else None

    return {
        "window_ms": window_ms,
        "max_size": max_size,
        "clients": clients,
        "throughput_rps": med("throughput_rps"),
        "p50_ms": med("p50_ms"),
        "mean_batch": med("mean_batch"),
        "cpu_ms_per_request": med("cpu_ms_per_request"),
        "errors": sum(r["errors"] for r in runs),
        "rounds": len(runs),
    }


def sweep_engine(
    store: Path, settings: Settings, queries: list[bytes], plan: SweepPlan, workdir: Path
) -> list[dict[str, Any]]:
    """Every pair of the plan on one engine: all services up, then rounds of every client level, pairs in
    turns, so that load from elsewhere on the machine falls on every pair alike."""
    services = start_pair_services(store, settings, plan.pairs, workdir)
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {}
    try:
        for _ in range(plan.rounds):
            for clients in plan.clients:
                for index, svc in enumerate(services):
                    level = load_test(svc, queries, clients, plan.seconds, plan.warmup)
                    level["mean_batch"] = level["model_mean_batch"]
                    level["cpu_ms_per_request"] = cpu_ms_per_request(level)
                    runs.setdefault((index, clients), []).append(level)
    finally:
        for svc in services:
            svc.stop()
    rows = [
        _row(*plan.pairs[i], clients, runs[(i, clients)]) for clients in plan.clients for i in range(len(plan.pairs))
    ]
    for r in rows:
        log.info(
            "  window %g ms, max %d, %d clients: %s req/s, p50 %s ms, %s CPU ms/request, batch %s",
            r["window_ms"],
            r["max_size"],
            r["clients"],
            r["throughput_rps"],
            r["p50_ms"],
            r["cpu_ms_per_request"],
            r["mean_batch"],
        )
    return rows


def sweep(
    stores: dict[str, Path], settings: Settings, queries: list[bytes], workdir: Path, plan: SweepPlan | None = None
) -> dict[str, Any]:
    """Every engine of the plan with an imported store in `stores` (engine key -> its milvus.db), every pair."""
    plan = plan or SweepPlan()
    out: dict[str, Any] = {
        "plan": {
            "pairs": [list(p) for p in plan.pairs],
            "clients": list(plan.clients),
            "seconds": plan.seconds,
            "rounds": plan.rounds,
        },
        "engines": {},
    }
    for key in plan.engines:
        if key in stores:
            log.info("batching sweep: %s", key)
            out["engines"][key] = sweep_engine(
                stores[key], ENGINES[key].settings(settings), queries, plan, workdir / f"sweep-{key}"
            )
    return out
