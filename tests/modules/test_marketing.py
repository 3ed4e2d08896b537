"""Quantitative marketing pre-screen on anvil: invalid, duplicate and blacklisted prospects are dropped."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient

from node.api.app import create_app
from node.auth.apikeys import Role, create_api_key
from node.errors import InvalidInput
from node.modules.marketing import MAX_LINE_CHARS, prescreen
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


# One customer identifier of each type as a prospect list may hold it, then its other forms (canonical, digits).
IDENTIFIERS_IN_SEGMENT = {
    "cn_resident_id": ("11010519850312008x", "11010519850312008X"),
    "phone": ("139 0000 0077", "+8613900000077", "13900000077"),
    "bank_card": ("6222020000000000075", "6222020000000000075"),
    "email": ("Zhang.Wei+Loan@Example.COM", "zhang.wei+loan@example.com"),
    "device_id": ("6F9619FF-8B86-D011-B42D-00C04FC964FF", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
    "ip": ("::ffff:203.0.113.77", "203.0.113.77"),
    "uscc": ("911100000000000074", "911100000000000074"),
}
# A list whose rows lost their first (segment) cell: each row's segment cell holds a customer's identifier.
SHIFTED_PROSPECTS = "segment,phone,cn_resident_id,name\n" + "".join(
    f"{forms[0]},{phone(9)},Zhang\n" for forms in IDENTIFIERS_IN_SEGMENT.values()) + f"young,{phone(8)},,Li\n"


def identifiers_in(text: str) -> list[str]:
    """The types of IDENTIFIERS_IN_SEGMENT whose value, in any of its forms, `text` holds."""
    lowered = text.lower()
    return [kind for kind, forms in IDENTIFIERS_IN_SEGMENT.items() if any(f.lower() in lowered for f in forms)]


def test_prescreen_shows_no_identifier_held_in_the_segment_column(keyed_banks: list[NodeContext]) -> None:
    """Segment names are printed (the CLI's table, its --json, the API's answer): a row whose segment cell holds a
    customer's identifier, of any type, is dropped as invalid and counted under `all`, its identifier not shown."""
    a = keyed_banks[0]
    result = prescreen(a, SHIFTED_PROSPECTS.splitlines(keepends=True))
    counts = result.to_json()
    assert identifiers_in(json.dumps(counts)) == []
    assert counts["segments"] == {
        "all": {"input": 7, "invalid": 7, "duplicate": 0, "blacklisted": 0, "kept": 0},
        "young": {"input": 1, "invalid": 0, "duplicate": 0, "blacklisted": 0, "kept": 1}}
    assert counts["invalid_reasons"] == {"segment:holds_identifier": 7}
    assert result.clean_csv() == f"segment,phone,cn_resident_id,name\nyoung,+86{phone(8)},,Li\n"
    with a.store.transaction() as session:
        token = create_api_key(session, Role.workflow, "test").token
    with TestClient(create_app(a)) as client:
        answer = client.post("/v1/marketing/prescreen", content=SHIFTED_PROSPECTS.encode(),
                             headers={"X-API-Key": token, "Content-Type": "text/csv"})
    assert answer.status_code == 200 and identifiers_in(answer.text) == []


class EndlessLine(io.StringIO):
    """A header, then a line that never ends (as /dev/zero reads), counting the characters handed out."""

    def __init__(self) -> None:
        super().__init__()
        self.handed_out = 0
        self.header = True

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        line = "phone\n" if self.header else "0" * (size if size and size > 0 else 50_000_000)
        self.header = False
        self.handed_out += len(line)
        return line

    def __next__(self) -> str:
        return self.readline()


def test_prescreen_refuses_a_line_without_end_having_read_a_bounded_part(keyed_banks: list[NodeContext]) -> None:
    """A line was read whole before the CSV reader looked at it: a file without line breaks filled the memory."""
    lines = EndlessLine()
    with pytest.raises(InvalidInput, match="line 2 of the prospect list is longer than") as refused:
        prescreen(keyed_banks[0], lines)
    assert refused.value.code == "malformed_csv" and lines.handed_out <= 2 * MAX_LINE_CHARS
