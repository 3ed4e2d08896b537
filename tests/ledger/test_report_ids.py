"""The report id: derived from the report's content, so a report sent again is found, not queued twice."""

from __future__ import annotations

from typing import Any, cast

from node.ledger.reports import ReportIntake, ReportRequest
from node.runtime import NodeContext
from tests.conftest import LedgerNodes

REPORT_ID_KEY = bytes(range(32))
ALLIANCE_KEY = bytes(range(1, 33))


def intake() -> ReportIntake:
    # prepare() with an explicit epoch key reads nothing from the store, keyring or vault.
    unused = cast(Any, None)
    return ReportIntake(unused, unused, unused, REPORT_ID_KEY)


def test_report_id_matches_vector_from_openssl() -> None:
    # Stored ids must survive an upgrade: a derivation that drifted would queue a resent report a second time.
    # printf '[[["phone","+8613800138000"]],"telecom_fraud",85,null,730,"","CASE-1"]' \
    #   | openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...1f   (first 32 hex digits)
    request = ReportRequest([("phone", "+86 138-0013-8000")], "telecom_fraud", 85, case_reference="CASE-1")
    prepared = intake().prepare(request, now=1_700_000_000, epoch_key=(1, ALLIANCE_KEY))
    assert prepared.report_id == "432d1e3705bc3ca3375ad4d49f4b8da1"



def test_report_id_reads_the_evidence_hash_whichever_way_it_is_written() -> None:
    # The hash as bare lowercase hex, the id bare hex had before: ... 730,"abab…ab","CASE-1"] as above. Its earlier
    # id is the one "0x" + hex had (... 730,"0xabab…ab","CASE-1"]), which intake finds for reports taken so before.
    for written in ("ab" * 32, "0x" + "ab" * 32, "0X" + "AB" * 32, "aB" * 32):
        request = ReportRequest([("phone", "+86 138-0013-8000")], "telecom_fraud", 85, evidence_sha256=written,
                                case_reference="CASE-1")
        prepared = intake().prepare(request, now=1_700_000_000, epoch_key=(1, ALLIANCE_KEY))
        assert (prepared.report_id, prepared.earlier_id) == ("445c29a3fd0b85e8c5f085cc7ab2a3a3",
                                                             "0162ab5e6937257e913ca4db771a4a7a")
    no_evidence = ReportRequest([("phone", "+86 138-0013-8000")], "telecom_fraud", 85, case_reference="CASE-1")
    assert intake().prepare(no_evidence, now=1_700_000_000, epoch_key=(1, ALLIANCE_KEY)).earlier_id is None

def test_report_id_ignores_identifier_order_and_formatting_but_not_content() -> None:
    def report_id(identifiers: list[tuple[str, str]], confidence: int = 85) -> str:
        request = ReportRequest(identifiers, "telecom_fraud", confidence)
        return intake().prepare(request, now=1_700_000_000, epoch_key=(1, ALLIANCE_KEY)).report_id

    phone, resident = ("phone", "+8613800138000"), ("cn_resident_id", "11010519491231002X")
    assert report_id([phone, resident]) == report_id([("cn_resident_id", "110105 19491231 002x"),
                                                      ("phone", "138 0013 8000")])
    assert report_id([phone, resident]) != report_id([phone])
    assert report_id([phone]) != report_id([phone], confidence=86)


def test_case_reference_hash_links_a_banks_own_cases_only(ledger_nodes: LedgerNodes) -> None:
    """The threat model's case number: caseRefHash is keyed by a key local to the reporting bank, so its own reports
    of a case share one hash and the same case number at another bank (the alliance key alike) gives another."""
    a, b, _ = ledger_nodes.nodes

    def case_ref_hash(bank: NodeContext, case_reference: str, phone: str = "+8613800138000") -> bytes:
        request = ReportRequest([("phone", phone)], "telecom_fraud", 85, case_reference=case_reference)
        return bank.report_intake.prepare(request, now=1_700_000_000, epoch_key=(1, ALLIANCE_KEY)).case_ref_hash

    ours = case_ref_hash(a, "CASE-1")
    assert ours == case_ref_hash(a, "CASE-1", phone="+8613900139000") != case_ref_hash(a, "CASE-2")
    assert case_ref_hash(b, "CASE-1") not in (ours, bytes(32))
    assert case_ref_hash(a, "") == bytes(32)  # no case reference: zero, as the ledger's records say
