"""Prometheus metrics of a running node (`GET /v1/node/metrics`): the outbox, publish batches, the mirror, key
epochs and the background loops.

Read from the store at each scrape (a few grouped counts, the outbox's a scan of its state column), not counted in
process, so every API replica of one store reports the same and a restart loses nothing. The loops' figures are
this process's own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from node.node_status import store_figures
from node.runtime import NodeContext
from node.store.models import as_utc

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
OUTBOX_STATES = ("queued", "batched", "confirmed", "withdrawn", "staged")  # staged: of imports not complete
BATCH_STATES = ("signed", "confirmed", "failed")


def render_metrics(node: NodeContext, workers: Mapping[str, Mapping[str, object]], *, version: str) -> bytes:
    """The node's metrics in the Prometheus text format; `workers` as `BackgroundWorkers.status()` gives them."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_NodeCollector(node, workers, version))
    return generate_latest(registry)


class _NodeCollector(Collector):
    def __init__(self, node: NodeContext, workers: Mapping[str, Mapping[str, object]], version: str) -> None:
        self._node = node
        self._workers = workers
        self._version = version

    def collect(self) -> Iterator[Metric]:
        settings = self._node.settings
        info = InfoMetricFamily("alliance_node", "This node: its bank, network and version.")
        info.add_metric([], {"bank_code": settings.bank_code, "network": settings.network.value,
                             "version": self._version})
        yield info
        yield from self._store_metrics()
        yield from self._worker_metrics()

    def _store_metrics(self) -> Iterator[Metric]:
        with self._node.store.session() as session:
            figures = store_figures(self._node, session)
        outbox, batches, mirror, epochs = figures.outbox, figures.batches, figures.mirror, figures.key_epochs
        oldest_queued = figures.oldest_queued_at

        records = GaugeMetricFamily("alliance_outbox_records", "Fraud-report records in the outbox, by state.",
                                    labels=["state"])
        for state in sorted({*OUTBOX_STATES, *outbox}):
            records.add_metric([state], outbox.get(state, 0))
        yield records
        age = (datetime.now(UTC) - as_utc(oldest_queued)).total_seconds() if oldest_queued is not None else 0.0
        yield GaugeMetricFamily("alliance_outbox_oldest_queued_age_seconds",
                                "Seconds the record queued longest has waited since it was queued, or queued again "
                                "(0: none queued).",
                                value=max(age, 0.0))
        batch_family = GaugeMetricFamily("alliance_publish_batches", "publishBatch transactions, by state.",
                                         labels=["state"])
        for state in sorted({*BATCH_STATES, *batches}):
            batch_family.add_metric([state], batches.get(state, 0))
        yield batch_family

        yield GaugeMetricFamily("alliance_mirror_block", "Last block the mirror has fully indexed (-1: none).",
                                value=mirror.as_of_block)
        yield GaugeMetricFamily("alliance_mirror_lag_seconds",
                                "Seconds since the mirror last caught up with the chain (NaN: never).",
                                value=mirror.lag_s if mirror.lag_s is not None else math.nan)
        yield GaugeMetricFamily("alliance_mirror_stale", "1 while checks answer marked stale, else 0.",
                                value=int(mirror.stale))
        yield GaugeMetricFamily("alliance_key_epochs_held", "Alliance key epochs this node holds.",
                                value=len(epochs))
        yield GaugeMetricFamily("alliance_key_epoch_newest", "The newest alliance key epoch held (0: none).",
                                value=max(epochs, default=0))

    def _worker_metrics(self) -> Iterator[Metric]:
        runs = CounterMetricFamily("alliance_worker_runs", "Steps a background loop has run in this process.",
                                   labels=["worker"])
        failing = GaugeMetricFamily("alliance_worker_failures_in_a_row",
                                    "Failed steps of a background loop since its last success.", labels=["worker"])
        last_ok = GaugeMetricFamily("alliance_worker_last_ok_timestamp_seconds",
                                    "Unix time of a background loop's last successful step (0: none yet).",
                                    labels=["worker"])
        for name, status in sorted(self._workers.items()):
            runs.add_metric([name], _number(status.get("runs")))
            failing.add_metric([name], _number(status.get("failures_in_a_row")))
            ok = status.get("last_ok")
            last_ok.add_metric([name], datetime.fromisoformat(ok).timestamp() if isinstance(ok, str) else 0.0)
        yield runs
        yield failing
        yield last_ok


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
