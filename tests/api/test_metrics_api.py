"""GET /v1/node/metrics: Prometheus text from the store's real state, for operator and auditor keys only."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from node.auth.apikeys import Role
from node.ledger.indexer import indexer_for
from node.metrics import render_metrics
from tests.api.conftest import ApiNode
from tests.api.test_fraud_reports_api import REPORT, with_key


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(api: ApiNode, role: Role = Role.auditor) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.client.get("/v1/node/metrics", headers=api.headers(role))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def test_metrics_follow_a_report_from_the_queue_to_the_chain_and_the_mirror(api: ApiNode) -> None:
    with_key(api)
    before = scrape(api)
    assert before[("alliance_outbox_records", (("state", "queued"),))] == 0
    assert before[("alliance_mirror_block", ())] == -1 and before[("alliance_mirror_stale", ())] == 1
    assert before[("alliance_key_epoch_newest", ())] == 1 and before[("alliance_key_epochs_held", ())] == 1
    info = [labels for (name, labels) in before if name == "alliance_node_info"]
    assert info and ("bank_code", "BANKA") in info[0]

    assert api.client.post("/v1/fraud/reports", json=REPORT, headers=api.headers(Role.analyst)).status_code == 202
    queued = scrape(api)
    assert queued[("alliance_outbox_records", (("state", "queued"),))] == 2  # two identifiers
    assert queued[("alliance_outbox_oldest_queued_age_seconds", ())] >= 0

    api.node.publisher.drain()
    indexer_for(api.node).sync()
    after = scrape(api, Role.operator)
    assert after[("alliance_outbox_records", (("state", "queued"),))] == 0
    assert after[("alliance_outbox_records", (("state", "confirmed"),))] == 2
    assert after[("alliance_publish_batches", (("state", "confirmed"),))] == 1
    assert after[("alliance_outbox_oldest_queued_age_seconds", ())] == 0
    assert after[("alliance_mirror_block", ())] == api.node.chain.block_number()
    assert after[("alliance_mirror_stale", ())] == 0 and after[("alliance_mirror_lag_seconds", ())] >= 0


def test_metrics_are_for_operator_and_auditor_keys_only(api: ApiNode) -> None:
    for role in (Role.analyst, Role.workflow):
        refused = api.client.get("/v1/node/metrics", headers=api.headers(role))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert api.client.get("/v1/node/metrics").status_code == 401
    bearer = api.client.get("/v1/node/metrics", headers={"Authorization": f"Bearer {api.tokens[Role.auditor]}"})
    assert bearer.status_code == 200 and "alliance_outbox_records" in bearer.text
    for header in ("Bearer ak_0000000000000000_nope", "Basic " + api.tokens[Role.auditor], "Bearer "):
        refused = api.client.get("/v1/node/metrics", headers={"Authorization": header})
        assert refused.status_code == 401, header


def test_worker_metrics_come_from_the_loops_status(api: ApiNode) -> None:
    workers = {"publisher": {"runs": 7, "failures_in_a_row": 2, "last_ok": "2026-12-06T10:00:00+00:00",
                             "last_error": "ChainUnavailable: down"},
               "indexer": {"runs": 1, "failures_in_a_row": 0, "last_ok": None, "last_error": None}}
    text = render_metrics(api.node, workers, version="9.9.9").decode()
    found = samples(text)
    assert found[("alliance_worker_runs_total", (("worker", "publisher"),))] == 7
    assert found[("alliance_worker_failures_in_a_row", (("worker", "publisher"),))] == 2
    assert found[("alliance_worker_last_ok_timestamp_seconds", (("worker", "publisher"),))] == 1796551200
    assert found[("alliance_worker_last_ok_timestamp_seconds", (("worker", "indexer"),))] == 0
    assert "ChainUnavailable" not in text  # error texts are for /health, not labels
