"""Raw customer identifiers (and the borrower data a loan tape carries) after every flow that handles them: not in
the logs (at DEBUG), not in refusals' messages, not in clear in the store, not on chain, not in the STIX export."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from stdnum.cn import uscc as stdnum_uscc

from node.api.app import create_app
from node.assets.pools import anchor_draft, import_tape
from node.auth.apikeys import Role, create_api_key
from node.ledger.checks import check_batch, check_identity
from node.ledger.indexer import indexer_for
from node.ledger.key_distribution import rotate, sync_keys
from node.ledger.report_import import ImportRefused, import_reports
from node.ledger.reports import ReportRequest
from node.ledger.republish import republish
from node.modules.abs_factory import build_pool
from node.modules.credit_platform import book_loan, confirm_fraud, submit_application
from node.modules.marketing import prescreen
from node.modules.risk_operations import list_alerts, resolve_alert
from node.runtime import NodeContext
from node.store.models import Base
from node.workers import node_workers
from tests.assets.conftest import HEADER, loan_row, name_of, write_tape
from tests.assets.conftest import phone as tape_phone
from tests.assets.conftest import resident_id as tape_resident_id
from tests.conftest import LedgerNodes, chain_texts, moved_to_store
from tests.modules.workflow import application, bank_card, phone, resident_id


def email(i: int) -> str:
    return f"Wei.Zhang{i}+loan@Example.COM"


def device_id(i: int) -> str:
    return f"6F9619FF-8B86-D011-B42D-00C04FC964{i:02d}"


def ip(i: int) -> str:
    return f"::ffff:203.0.113.{i}"


def uscc(i: int) -> str:
    body = f"91110000{i:09d}"
    return body + stdnum_uscc.calc_check_digit(body)


def _other_types(i: int) -> list[str]:
    """Applicant `i`'s e-mail, device id and IP as given and in canonical form (lower case, a bare IPv4), and a
    USCC."""
    return [email(i), email(i).lower(), device_id(i), device_id(i).lower(), ip(i), f"203.0.113.{i}", uscc(i)]


def _forms(raw: str) -> set[bytes]:
    """The ways a raw identifier could sit in a file, a log or a chain: text, hex, UTF-16, digits alone."""
    digits = "".join(c for c in raw if c.isdigit())
    texts = {raw, raw.lower(), raw.upper(), "+86" + raw if raw.startswith("1") and len(raw) == 11 else raw}
    if len(digits) >= 11:
        texts.add(digits)
    forms = set()
    for text in texts:
        forms |= {text.encode(), text.encode("utf-16-le"), text.encode("utf-16-be"), text.encode().hex().encode()}
    return forms


def _leaks(blob: bytes, raws: list[str]) -> list[str]:
    lowered = blob.lower()
    return [raw for raw in raws if any(form.lower() in lowered for form in _forms(raw))]


def _store_bytes(node: NodeContext) -> bytes:
    """Every byte of the node's SQLite store, its WAL included; of a PostgreSQL store, every value of every table."""
    if node.store.engine.url.get_backend_name() == "sqlite":
        path = Path(node.store.engine.url.database or "")
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    with node.store.session() as session:
        return b"\n".join(value if isinstance(value, bytes) else str(value).encode()
                          for table in Base.metadata.sorted_tables for row in session.execute(select(table))
                          for value in row)


@pytest.fixture
def banks_a_on_store(ledger_nodes: LedgerNodes, keyed_banks: list[NodeContext], store_url: str) -> list[NodeContext]:
    """Banks A, B, C holding the epoch-1 key, A's store at `store_url` (SQLite or PostgreSQL), its mirror synced."""
    others = keyed_banks[1:]
    moved = moved_to_store(keyed_banks[0], store_url)
    ledger_nodes.nodes.append(moved)  # closed with the others
    sync_keys(moved)  # its key comes back from the chain, sealed to it
    indexer_for(moved).sync()
    return [moved, *others]


def test_raw_identifiers_stay_out_of_logs_store_chain_and_exports(
        banks_a_on_store: list[NodeContext], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    a, b, _ = banks = banks_a_on_store
    a.settings.risk_alert_webhook_url = "http://127.0.0.1:9/alerts"  # nothing listens: the failure is logged
    policy = tmp_path / "policy.toml"
    policy.write_text("[abs]\nmax_borrower_share = 1.0\nmax_region_share = 1.0\n")
    a.settings.credit_policy_file = policy
    raws = [resident_id(i) for i in range(1, 6)] + [phone(i) for i in range(1, 6)] + [bank_card(1), bank_card(4)]
    raws += [value for i in range(1, 7) for value in _other_types(i)]

    # Credit workflow at A: two approved and booked, one confirmed as fraud from the application.
    approved = [submit_application(a, application(i, email=email(i), device_id=device_id(i), ip=ip(i)),
                                   submitted_by="test") for i in (1, 2)]
    for i, decided in zip((1, 2), approved, strict=True):
        assert decided["outcome"] == "approve", decided["reasons"]
        book_loan(a, decided["application_id"], loan_reference=f"L-{i}")
    third = submit_application(a, application(3, email=email(3), device_id=device_id(3), ip=ip(3)),
                               submitted_by="test")
    confirm_fraud(a, third["application_id"], category="identity_theft", confidence=90, confirmed_by="test")

    # B reports borrower 1's phone and e-mail; A mirrors them, raises alerts (webhook fails), confirms one.
    b.report_intake.accept(ReportRequest([("phone", phone(1)), ("email", email(1))], "money_mule", 80),
                           submitted_by="b")
    b.publisher.drain()
    next(loop for loop in node_workers(a).loops if loop.name == "indexer").run_step()
    alert, _ = list_alerts(a)  # one for the phone, one for the e-mail
    resolve_alert(a, alert["alert_id"], confirm=True, by="analyst", category="money_mule", confidence=85)

    # Checks, valid and invalid, through the API too; a prospect list; a report import with a bad row; a pool.
    check_identity(a, [("cn_resident_id", resident_id(4)), ("phone", phone(4)), ("email", email(4)),
                       ("device_id", device_id(4)), ("ip", ip(4)), ("uscc", uscc(4))], "test")
    check_batch(a, [("phone", phone(5)), ("bank_card", bank_card(4)[:-1] + "0"), ("cn_resident_id", "x"),
                    ("email", email(5).replace("@", "@@")), ("ip", ip(5) + "/24"), ("uscc", uscc(5)[:-1] + "0"),
                    ("device_id", device_id(5) + "!")], "test")
    prospects = prescreen(a, ["phone,cn_resident_id,email,device_id,ip,uscc\n",
                              f"{phone(4)},{resident_id(4)},{email(4)},{device_id(4)},{ip(4)},{uscc(4)}\n",
                              f"{phone(5)},,{email(5)}x@,,,\n"])
    assert prospects.totals().kept == 1
    reports = tmp_path / "reports.csv"
    reports.write_text(f"identifier_type,identifier,category,confidence\nphone,{phone(5)},other,50\n"
                       f"cn_resident_id,{resident_id(5)[:-1]}0,other,50\nuscc,{uscc(5)[:-1]}0,other,50\n"
                       f"email,{email(5)}@,other,50\nip,{ip(5)}/24,other,50\n{device_id(5)},device_id,other,50\n")
    with pytest.raises(ImportRefused) as refused:
        import_reports(a.report_intake, reports, submitted_by="test")
    assert not _leaks(repr(refused.value.details).encode() + str(refused.value).encode(), raws)
    built = build_pool(a, "privacy-pool", anchor=True)
    assert built.anchored is not None
    # Names, addresses, incomes too; e-mails, and a business borrower known by its USCC.
    tape = write_tape(tmp_path / "tape.csv", [loan_row(1, borrower_email=email(6)), loan_row(2),
                                              loan_row(3, borrower_resident_id="", borrower_uscc=uscc(6))],
                      header=(*HEADER, "borrower_email", "borrower_uscc"))
    import_tape(a, "tape-pool", tape)
    anchor_draft(a, "tape-pool")
    raws += [s for i in range(1, 4) for s in (tape_resident_id(i), tape_phone(i), name_of(i), f"{i} Chang'an Avenue")]

    # A rotates the alliance key and republishes everything it reported under the new epoch.
    a.publisher.drain()
    rotate(a)
    for node in banks:
        sync_keys(node)
    assert republish(a).records > 0
    a.publisher.drain()
    indexer_for(a).sync()
    with a.store.transaction() as session:
        tokens = {role: create_api_key(session, role, "test").token for role in (Role.workflow, Role.analyst)}
    with TestClient(create_app(a)) as client:
        refusals = [client.post("/v1/checks/identity", headers={"X-API-Key": tokens[Role.workflow]},
                                json={"identifiers": [{"type": "phone", "value": phone(4)},
                                                      {"type": "cn_resident_id", "value": resident_id(5)[:-1] + "0"}]}),
                    client.post("/v1/fraud/reports", headers={"X-API-Key": tokens[Role.analyst]},
                                json={"identifiers": [{"type": resident_id(5), "value": "cn_resident_id"}],
                                      "category": "other", "confidence": 50}),
                    client.post("/v1/checks/identity", headers={"X-API-Key": tokens[Role.workflow]},
                                json={"identifiers": [{"type": phone(5), "value": "phone"}]})]
        # An identifier in the type's place (columns swapped), in a batch: answered inline, type not quoted back.
        swapped = client.post("/v1/checks/batch", headers={"X-API-Key": tokens[Role.workflow]},
                              json={"identifiers": [{"type": resident_id(5), "value": "cn_resident_id"},
                                                    {"type": email(4), "value": "email"}]})
        # Bodies outside the schema, on a core route and on one an extension mounts: FastAPI's own 422 quotes each
        # field's `input`, the node's answers the field's place and problem only.
        applicant = {**application(4).applicant.model_dump(mode="json"), "email": ["x", email(4)],
                     "phone": "9" * 60 + phone(4), "ip": {"v": ip(4)}, "device_id": 7}
        schema_refusals = [
            client.post("/v1/applications", headers={"X-API-Key": tokens[Role.workflow]},
                        json={**application(4).model_dump(mode="json"), "applicant": applicant}),
            client.post("/v1/checks/batch", headers={"X-API-Key": tokens[Role.workflow]},
                        json={"identifiers": [{"type": "uscc", "value": [uscc(4)]}, {"type": "phone"},
                                              {"type": "device_id", "value": {"v": device_id(4)}}]})]
        export = client.get("/v1/fraud/export?include_inactive=true", headers={"X-API-Key": tokens[Role.analyst]})
    assert [r.status_code for r in refusals + schema_refusals] == [422] * 5 and export.status_code == 200
    assert swapped.status_code == 200 and len(export.json()["objects"]) > 3
    assert not _leaks(b"".join(r.content for r in refusals) + swapped.content, raws), "raw identifiers in an answer"
    assert all(r.json()["error"]["code"] == "invalid_request" for r in schema_refusals)
    assert not _leaks(b"".join(r.content for r in schema_refusals), raws), "raw identifiers in a schema refusal"

    assert "risk alert webhook failed" in caplog.text  # the failure paths ran and logged
    assert not _leaks(caplog.text.encode(), raws), "raw identifiers in the log"
    assert not _leaks(export.content, raws), "raw identifiers in the STIX export"
    assert not _leaks("".join(chain_texts(a.settings.effective_rpc_url)).encode(), raws), "raw identifiers on chain"
    for node in (a, b):
        assert not _leaks(_store_bytes(node), raws), f"raw identifiers in clear in {node.settings.bank_code}'s store"
