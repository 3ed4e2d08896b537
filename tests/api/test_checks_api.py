"""`/v1/checks/*`, `/v1/fraud/indicators/{hash}` and `/v1/fraud/export` over mirror rows written directly."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from node.api.routes.checks import CheckOut
from node.auth.apikeys import Role
from node.crypto.keyed_hash import hash_identifier
from node.ledger.checks import MAX_BATCH, MAX_IDENTITY
from node.store.ledger_tables import CheckLogEntry
from tests.api.conftest import ApiNode
from tests.ledger.mirror_rows import DAY, Row, add_batch, add_reaction, set_synced
from tests.ledger.test_stix_conformance import conformance_problems

PHONE = "13800138000"
NOW = int(time.time())


@pytest.fixture
def key(api: ApiNode) -> bytes:
    secret = os.urandom(32)
    api.node.keyring.store_key(1, secret, source="generated")
    return secret


@pytest.fixture
def reported_phone(api: ApiNode, key: bytes) -> bytes:
    """A phone reported by member 2 a day ago and endorsed by member 3; the mirror synced just now."""
    phone = hash_identifier(key, "phone", PHONE)[1]
    with api.node.store.transaction() as session:
        add_batch(session, 7, reporter=2, rows=[Row(phone, confidence=50, valid_from=NOW - DAY)],
                  published_at=NOW - DAY, block=20)
        add_reaction(session, "endorsed", phone, 3, block=21, at=NOW - DAY, value=50)
        set_synced(session, last_block=21, synced_at=datetime.now(UTC),
                   contract=api.node.deployment.address("FraudLedger"))
    return phone


def check(api: ApiNode, path: str, identifiers: list[tuple[str, str]], role: Role = Role.workflow
          ) -> tuple[int, dict[str, Any]]:
    response = api.client.post(f"/v1/checks/{path}", headers=api.headers(role),
                               json={"identifiers": [{"type": t, "value": v} for t, v in identifiers]})
    return response.status_code, response.json()


def test_create_identity_check_returns_hit_and_miss(api: ApiNode, reported_phone: bytes) -> None:
    status, body = check(api, "identity", [("phone", "+86 138 0013 8000"), ("email", "a@b.example")])
    assert status == 200, body
    hit, miss = body["results"]
    assert hit == {"item": 0, "type": "phone", "indicator": "0x" + reported_phone.hex(), "hit": True,
                   "categories": ["money_mule"], "reporter_count": 1, "confidence": 74, "disputed": False}
    assert miss["hit"] is False and miss["categories"] == []
    assert body["as_of_block"] == 21 and body["stale"] is False and body["lag_s"] < 30


def test_create_identity_check_refuses_invalid_identifier_with_reason_code(api: ApiNode, key: bytes) -> None:
    status, body = check(api, "identity", [("phone", PHONE), ("bank_card", "6222021234567890127")])
    assert status == 422
    error = body["error"]
    assert error["code"] == "checksum_failed"
    assert error["details"] == [{"item": 1, "type": "bank_card", "code": "checksum_failed",
                                 "reason": "Luhn check digit does not match"}]


def test_create_identity_check_refuses_malformed_body(api: ApiNode, key: bytes) -> None:
    response = api.client.post("/v1/checks/identity", headers=api.headers(Role.workflow),
                               json={"identifiers": [{"type": "phone"}]})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


def test_create_check_without_alliance_key_is_unavailable(api: ApiNode) -> None:
    status, body = check(api, "identity", [("phone", PHONE)])
    assert status == 503 and body["error"]["code"] == "no_alliance_key"


def test_create_check_is_stale_without_sync_state(api: ApiNode, key: bytes) -> None:
    status, body = check(api, "identity", [("phone", PHONE)])
    assert status == 200 and body["stale"] is True and body["as_of_block"] == -1 and body["lag_s"] is None


def test_create_batch_check_answers_invalid_items_inline(api: ApiNode, reported_phone: bytes) -> None:
    status, body = check(api, "batch", [("phone", PHONE), ("cn_resident_id", "123"), ("fax", "1")],
                         role=Role.analyst)
    assert status == 200
    first, short, unknown = body["results"]
    assert first["hit"] is True
    assert short["error"]["code"] == "bad_length" and short["indicator"] is None
    # Not quoted back: a type that is none may be the identifier itself, given in the type's place.
    assert unknown["error"]["code"] == "unknown_type" and unknown["type"] is None
    CheckOut.model_validate(body)  # the answer the OpenAPI document shows: its `type` was a string there
    assert api.client.get("/openapi.json").json()["components"]["schemas"]["IdentifierResult"]["properties"]["type"][
        "anyOf"] == [{"type": "string"}, {"type": "null"}]


@pytest.mark.parametrize(("path", "status"), [("identity", 422), ("batch", 200)])
def test_create_check_with_a_lone_surrogate_answers_with_its_reason(api: ApiNode, key: bytes, path: str,
                                                                    status: int) -> None:
    # JSON may spell a lone surrogate ("\ud800"), which UTF-8 cannot encode: quoted back in the refusal, it made
    # the answer itself fail (500).
    body = '{"identifiers": [{"type": "fax\\ud800", "value": "1"}]}'
    response = api.client.post(f"/v1/checks/{path}", content=body,
                               headers={**api.headers(Role.workflow), "Content-Type": "application/json"})
    assert response.status_code == status
    answer = response.json()
    code = answer["error"]["code"] if status == 422 else answer["results"][0]["error"]["code"]
    assert code == "unknown_type"


@pytest.mark.parametrize(("path", "most"), [("identity", MAX_IDENTITY), ("batch", MAX_BATCH)])
def test_create_check_refuses_too_many_or_none_as_its_document_says(api: ApiNode, key: bytes, path: str,
                                                                     most: int) -> None:
    status, body = check(api, path, [("ip", "10.0.0.1")] * (most + 1))
    assert status == 413 and body["error"]["code"] == "too_many_identifiers"
    status, body = check(api, path, [])
    assert status == 422 and body["error"]["code"] == "no_identifiers"
    assert check(api, path, [("ip", "10.0.0.1")] * most)[0] == 200
    # The document said any number, none included.
    spec = api.client.get("/openapi.json").json()
    schema = spec["paths"][f"/v1/checks/{path}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    identifiers = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]["properties"]["identifiers"]
    assert (identifiers["minItems"], identifiers["maxItems"]) == (1, most)


@pytest.mark.parametrize("role", [Role.auditor, Role.operator])
def test_create_checks_refused_for_other_roles(api: ApiNode, key: bytes, role: Role) -> None:
    for path in ("identity", "batch"):
        status, body = check(api, path, [("phone", PHONE)], role=role)
        assert status == 403 and body["error"]["code"] == "forbidden"


def test_create_check_requires_api_key(api: ApiNode, key: bytes) -> None:
    response = api.client.post("/v1/checks/identity", json={"identifiers": [{"type": "phone", "value": PHONE}]})
    assert response.status_code == 401


def test_create_checks_write_query_log(api: ApiNode, reported_phone: bytes) -> None:
    check(api, "identity", [("phone", PHONE)])
    check(api, "batch", [("ip", "10.1.2.3")], role=Role.analyst)
    with api.node.store.session() as session:
        entries = session.scalars(select(CheckLogEntry).order_by(CheckLogEntry.id)).all()
    key_ids = {role: api.tokens[role].split("_")[1] for role in (Role.workflow, Role.analyst)}
    assert [(e.key_id, e.kind) for e in entries] == [(key_ids[Role.workflow], "identity"),
                                                      (key_ids[Role.analyst], "batch")]
    assert json.loads(entries[0].hits) == [reported_phone.hex()] and json.loads(entries[1].hits) == []
    assert entries[0].as_of_block == 21 and entries[0].stale is False


def test_read_indicator_returns_history_and_state(api: ApiNode, reported_phone: bytes) -> None:
    response = api.client.get(f"/v1/fraud/indicators/0x{reported_phone.hex()}", headers=api.headers(Role.auditor))
    assert response.status_code == 200
    body = response.json()
    assert body["state"]["active"] and body["state"]["reporters"] == [2] and body["state"]["endorsers"] == [3]
    assert [(r["batch_id"], r["block_number"], r["reporter_member_id"]) for r in body["records"]] == [(7, 20, 2)]
    assert re.fullmatch(r"0x[0-9a-f]{64}", body["records"][0]["tx_hash"])
    assert [(e["kind"], e["member_id"], e["value"]) for e in body["reactions"]] == [("endorsed", 3, 50)]
    assert body["as_of_block"] == 21 and body["stale"] is False
    without_prefix = api.client.get(f"/v1/fraud/indicators/{reported_phone.hex().upper()}",
                                    headers=api.headers(Role.analyst))
    assert without_prefix.status_code == 200


def test_read_indicator_unknown_is_not_found(api: ApiNode) -> None:
    response = api.client.get(f"/v1/fraud/indicators/{'ab' * 32}", headers=api.headers(Role.analyst))
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_indicator"


@pytest.mark.parametrize("text", ["abc", "0x" + "zz" * 32, "ab" * 33])
def test_read_indicator_malformed_hash_is_refused(api: ApiNode, text: str) -> None:
    response = api.client.get(f"/v1/fraud/indicators/{text}", headers=api.headers(Role.analyst))
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_indicator"


def test_read_indicator_refused_for_workflow(api: ApiNode, reported_phone: bytes) -> None:
    response = api.client.get(f"/v1/fraud/indicators/{reported_phone.hex()}", headers=api.headers(Role.workflow))
    assert response.status_code == 403


def test_read_export_returns_stix_bundle(api: ApiNode, reported_phone: bytes) -> None:
    response = api.client.get("/v1/fraud/export", headers=api.headers(Role.analyst))
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["type"] == "bundle" and re.fullmatch(r"bundle--[0-9a-f-]{36}", bundle["id"])
    kinds = [o["type"] for o in bundle["objects"]]
    assert kinds == ["identity", "indicator"]
    assert bundle["objects"][1]["pattern"] == f"[x-alliance-indicator:hash = '{reported_phone.hex()}']"


def test_read_export_pages_with_cursor_header(api: ApiNode, reported_phone: bytes) -> None:
    other = os.urandom(32)
    with api.node.store.transaction() as session:
        add_batch(session, 8, reporter=3, rows=[Row(other, valid_from=NOW)], block=22, published_at=NOW)
    first = api.client.get("/v1/fraud/export", params={"limit": 1}, headers=api.headers(Role.analyst))
    cursor = first.headers["X-Next-After"]
    assert cursor == min(reported_phone, other).hex()
    second = api.client.get("/v1/fraud/export", params={"limit": 1, "after": cursor}, headers=api.headers(Role.analyst))
    third = api.client.get("/v1/fraud/export", params={"limit": 1, "after": second.headers["X-Next-After"]},
                           headers=api.headers(Role.analyst))
    assert [o["pattern"] for o in second.json()["objects"] if o["type"] == "indicator"] == [
        f"[x-alliance-indicator:hash = '{max(reported_phone, other).hex()}']"]
    assert "objects" not in third.json() and "X-Next-After" not in third.headers  # STIX lists are never empty


def test_read_export_refuses_bad_cursor_and_limit(api: ApiNode) -> None:
    bad_cursor = api.client.get("/v1/fraud/export", params={"after": "zz"}, headers=api.headers(Role.analyst))
    assert bad_cursor.status_code == 422 and bad_cursor.json()["error"]["code"] == "invalid_indicator"
    bad_limit = api.client.get("/v1/fraud/export", params={"limit": 0}, headers=api.headers(Role.analyst))
    assert bad_limit.status_code == 422 and bad_limit.json()["error"]["code"] == "invalid_request"


def test_read_export_pages_conform_to_stix_2_1(api: ApiNode, reported_phone: bytes) -> None:
    # What a platform reads is the response body: each page, and the empty one at the end, passes the OASIS
    # validator as served (tests/ledger/test_stix_conformance.py says which warnings are deliberate).
    with api.node.store.transaction() as session:
        add_batch(session, 8, reporter=3, rows=[Row(os.urandom(32), identifier_type=5, category=4, valid_from=NOW)],
                  block=22, published_at=NOW)
        add_reaction(session, "disputed", reported_phone, 3, block=23, at=NOW, value=1)
    pages, params = [], {"limit": "1", "include_inactive": "true"}
    while True:
        response = api.client.get("/v1/fraud/export", params=params, headers=api.headers(Role.analyst))
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        pages.append(response.text)
        if "X-Next-After" not in response.headers:
            break
        params["after"] = response.headers["X-Next-After"]
    assert len(pages) == 3 and "objects" not in json.loads(pages[-1])
    assert [conformance_problems(page) for page in pages] == [[], [], []]


@pytest.mark.parametrize(("params", "code"), [
    ({"after": ""}, "invalid_indicator"), ({"after": "0x"}, "invalid_indicator"),
    ({"after": "ab" * 31}, "invalid_indicator"), ({"after": "0x" + "zz" * 32}, "invalid_indicator"),
    ({"limit": "abc"}, "invalid_request"), ({"limit": "1.5"}, "invalid_request"), ({"limit": "-1"}, "invalid_request"),
    ({"limit": "50001"}, "invalid_request"), ({"limit": ""}, "invalid_request"),
    ({"include_inactive": "maybe"}, "invalid_request")])
def test_read_export_refuses_malformed_paging(api: ApiNode, params: dict[str, str], code: str) -> None:
    response = api.client.get("/v1/fraud/export", params=params, headers=api.headers(Role.analyst))
    assert response.status_code == 422 and response.json()["error"]["code"] == code


@pytest.mark.parametrize("role", [Role.auditor, Role.workflow, Role.operator])
def test_read_export_refused_for_other_roles(api: ApiNode, role: Role) -> None:
    assert api.client.get("/v1/fraud/export", headers=api.headers(role)).status_code == 403


def test_read_log_answers_operators_and_auditors_only(api: ApiNode, reported_phone: bytes) -> None:
    status, _ = check(api, "identity", [("phone", PHONE)])
    assert status == 200
    for role in (Role.operator, Role.auditor):
        response = api.client.get("/v1/checks/log", headers=api.headers(role),
                                  params={"indicator": "0x" + reported_phone.hex(), "since": "2000-01-01T00:00:00Z"})
        assert response.status_code == 200, response.text
        (entry,) = response.json()["entries"]
        assert entry["hits"] == ["0x" + reported_phone.hex()] and entry["checked"] == 1
        assert entry["kind"] == "identity" and response.json()["next_before_id"] is None
    for role in (Role.analyst, Role.workflow):
        response = api.client.get("/v1/checks/log", headers=api.headers(role))
        assert response.status_code == 403, response.text


def test_read_log_refuses_bad_parameters_with_codes(api: ApiNode, key: bytes) -> None:
    for params, code in (({"indicator": "0x12"}, "invalid_indicator"),
                         ({"since": "2026-12-02", "until": "2026-12-01"}, "invalid_time_range"),
                         # These three were 500s: a naive and an aware time compared, a time with no UTC equivalent
                         # (OverflowError), an id past 64 bits (SQLite's OverflowError).
                         ({"since": "2026-12-01T09:00:00", "until": "2026-12-01T16:00:00+08:00"},
                          "invalid_time_range"),
                         ({"since": "0001-01-01T00:00:00+08:00"}, "invalid_time"),
                         ({"before_id": 2**63}, "invalid_before_id")):
        response = api.client.get("/v1/checks/log", headers=api.headers(Role.auditor), params=params)
        assert response.status_code == 422 and response.json()["error"]["code"] == code, response.text
    for params in ({"limit": 0}, {"limit": 1001}, {"since": "yesterday"}, {"before_id": 0}):
        response = api.client.get("/v1/checks/log", headers=api.headers(Role.auditor), params=params)
        assert response.status_code == 422 and response.json()["error"]["code"], response.text


@pytest.mark.parametrize(("since", "until"), [("2000-01-01T08:00:00+08:00", "2100-01-01"),
                                              ("2000-01-01", "2100-01-01T00:00:00Z")])
def test_read_log_takes_one_bound_with_a_zone_and_one_without(api: ApiNode, reported_phone: bytes, since: str,
                                                              until: str) -> None:
    assert check(api, "identity", [("phone", PHONE)])[0] == 200
    response = api.client.get("/v1/checks/log", headers=api.headers(Role.auditor),
                              params={"since": since, "until": until})
    assert response.status_code == 200, response.text
    assert len(response.json()["entries"]) == 1
    empty = api.client.get("/v1/checks/log", headers=api.headers(Role.auditor),
                           params={"since": since, "until": until.replace("2100", "2001")})
    assert empty.status_code == 200 and empty.json()["entries"] == [], empty.text


def test_read_log_reads_its_bounds_as_iso_8601_as_the_cli_does(api: ApiNode, reported_phone: bytes) -> None:
    """A number was taken as Unix seconds: since=21000101 (1 January 2100 to the CLI) meant 1970 and listed the log."""
    assert check(api, "identity", [("phone", PHONE)])[0] == 200
    for since, listed in (("21000101", 0), ("2100-01-01", 0), ("20000101", 1), ("20000101T0000Z", 1)):
        response = api.client.get("/v1/checks/log", headers=api.headers(Role.auditor), params={"since": since})
        assert response.status_code == 200, response.text
        assert len(response.json()["entries"]) == listed, since
    for number in ("1700000000", "0.5", "2026"):
        response = api.client.get("/v1/checks/log", headers=api.headers(Role.auditor), params={"until": number})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_time" and number not in response.text


@pytest.mark.parametrize("params", [{"since": "9999-12-31T23:59:59-01:00"}, {"until": "0001-01-01T00:00:00+01:00"}])
def test_read_log_refuses_a_time_out_of_range_in_utc(api: ApiNode, params: dict[str, str]) -> None:
    response = api.client.get("/v1/checks/log", headers=api.headers(Role.auditor), params=params)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_time", response.text


@pytest.mark.parametrize("before_id", [2**63, 2**64])
def test_read_log_refuses_a_before_id_past_the_stores_integers(api: ApiNode, before_id: int) -> None:
    response = api.client.get("/v1/checks/log", headers=api.headers(Role.auditor), params={"before_id": before_id})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_before_id", response.text
