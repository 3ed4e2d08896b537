"""Quantitative marketing pre-screen on anvil: invalid, duplicate and blacklisted prospects are dropped."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.modules.marketing import prescreen
from node.runtime import NodeContext
from tests.modules.workflow import phone, report_and_mirror, resident_id

PROSPECTS = "\n".join([
    "segment,phone,cn_resident_id,name",
    f"young,{phone(1)},{resident_id(1)},Li",
    f"young,+86 {phone(1)[:3]} {phone(1)[3:7]} {phone(1)[7:]},,Li again",  # the same phone: duplicate
    f"young,{phone(2)},{resident_id(2)},Wang",  # reported by bank B: blacklisted
    "young,12345,,Zhao",  # invalid phone
    f"senior,{phone(3)},{resident_id(3)[:-1]}0,Sun",  # resident ID check digit wrong
    f"senior,{phone(4)},,Zhou",
    "senior,,,Nobody",
]) + "\n"


def test_prescreen_drops_invalid_duplicate_and_blacklisted(keyed_banks: list[NodeContext]) -> None:
    a, b, _ = keyed_banks
    report_and_mirror(b, a, [("cn_resident_id", resident_id(2))])
    result = prescreen(a, PROSPECTS.splitlines(keepends=True))
    counts = result.to_json()
    assert counts["segments"]["young"] == {"input": 4, "invalid": 1, "duplicate": 1, "blacklisted": 1, "kept": 1}
    assert counts["segments"]["senior"] == {"input": 3, "invalid": 2, "duplicate": 0, "blacklisted": 0, "kept": 1}
    assert counts["invalid_reasons"] == {"cn_resident_id:checksum_failed": 1, "phone:invalid_region": 1,
                                         "row:no_identifier": 1}
    assert result.clean_csv().splitlines() == ["segment,phone,cn_resident_id,name",
                                               f"young,+86{phone(1)},{resident_id(1)},Li",
                                               f"senior,+86{phone(4)},,Zhou"]


def test_prescreen_api_refuses_list_without_identifier_columns(keyed_banks: list[NodeContext]) -> None:
    a = keyed_banks[0]
    with a.store.transaction() as session:
        token = create_api_key(session, Role.workflow, "test").token
    with TestClient(create_app(a)) as client:
        headers = {"X-API-Key": token, "Content-Type": "text/csv"}
        refused = client.post("/v1/marketing/prescreen", content="segment,name\nx,Li\n", headers=headers)
        ok = client.post("/v1/marketing/prescreen", content=PROSPECTS, headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "no_identifier_columns"
    assert ok.status_code == 200 and ok.json()["totals"]["kept"] == 3


@pytest.mark.parametrize(("body", "code"), [
    # No identifier is that long; the csv module's limit raised csv.Error, an HTTP 500.
    ("segment,phone\na," + "1" * 200_000 + "\n", "malformed_csv"),
    # Of two phone columns the first went unchecked and was overwritten by the second in the clean list.
    (f"phone,segment,phone\n{phone(1)},a,{phone(2)}\n", "duplicate_columns"),
], ids=["field_over_csv_limit", "repeated_column"])
def test_prescreen_api_refuses_malformed_list(keyed_banks: list[NodeContext], body: str, code: str) -> None:
    a = keyed_banks[0]
    with a.store.transaction() as session:
        token = create_api_key(session, Role.analyst, "test").token
    with TestClient(create_app(a), raise_server_exceptions=False) as client:
        refused = client.post("/v1/marketing/prescreen", content=body,
                              headers={"X-API-Key": token, "Content-Type": "text/csv"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == code, refused.text
    assert phone(1) not in refused.text


def test_prescreen_api_reads_rows_as_the_cli_does(keyed_banks: list[NodeContext]) -> None:
    a = keyed_banks[0]
    # A form feed or a Unicode line separator inside a field is not a line break of CSV: str.splitlines made
    # two rows of this one (the second an invalid prospect).
    body = f"phone,segment,note\n{phone(1)},a,x\u2028y\x0cz\n{phone(2)},b,\"two\nlines\"\n"
    with a.store.transaction() as session:
        token = create_api_key(session, Role.analyst, "test").token
    with TestClient(create_app(a)) as client:
        answer = client.post("/v1/marketing/prescreen", content=body.encode(),
                             headers={"X-API-Key": token, "Content-Type": "text/csv"}).json()
    assert answer["totals"] == {"input": 2, "invalid": 0, "duplicate": 0, "blacklisted": 0, "kept": 2}
    assert answer["clean_csv"] == f"phone,segment,note\n+86{phone(1)},a,x\u2028y\x0cz\n+86{phone(2)},b,\"two\nlines\"\n"
