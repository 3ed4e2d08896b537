"""Chaos: `kill -9` of a running `alliance node start` at random moments, on SQLite and on PostgreSQL.

The other crash tests stop the node at chosen points (tests/ledger/test_publisher.py, test_node_restart.py) or kill
one command (test_publisher_kill.py). Here the whole node process is killed while everything runs at once: reports
arriving one by one and in bulk over the API, a CSV import in another process, the publisher, the indexer, and key
distribution (the epoch-1 key generated and sent, a second epoch started by bank B, a newcomer admitted). The chain
is a separate anvil that outlives the node. Mid-run it is stopped and started again once (it keeps its state), and
killed once: it comes back without its newest blocks, as a dev chain does, and the node must publish what it lost.

Afterwards, from the chain alone: every accepted report's identifiers are on chain exactly once, and nothing that
was not accepted is; from the store: no outbox row or batch is left unfinished; the node's mirror digest equals
that of a rebuild into a fresh store. The schedule comes from a fixed seed, so a failure can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from node.auth.apikeys import Role, create_api_key
from node.chain.client import ChainClient
from node.chain.deployment import deploy_consortium, load_deployment, save_deployment
from node.chain.devchain import DevChain
from node.chain.fraud_ledger import unpack_records
from node.chain.registry import MemberRole
from node.consortium import this_bank_as_founder
from node.crypto.envelopes import public_key_bytes
from node.crypto.keyed_hash import indicator_hash
from node.ledger.digest import node_digest
from node.ledger.identifiers import IdentifierType, normalise
from node.ledger.indexer import indexer_for
from node.ledger.key_distribution import sync_keys
from node.paths import PROJECT_ROOT
from node.runtime import NodeContext
from node.store.ledger_tables import OutboxRecord, PublishBatch, SyncState
from tests.conftest import TEST_PASSPHRASE, free_port, make_node

ALLIANCE = [sys.executable, "-c", "from alliance_cli.main import run; run()"]
SEED = 20261206
KILLS = 5  # round 2 starts a key epoch and imports a CSV, 3 admits a bank, 4 stops the chain, 5 kills it
PUBLISH_BATCH = 40  # small batches: many publishBatch transactions for a kill to land between or inside
PACE_S = 0.1  # between two requests: the work spreads over the rounds, so kills land amid it


def phone(n: int) -> str:
    return f"+86139{n:08d}"


def report_body(n: int) -> dict[str, Any]:
    return {"identifiers": [{"type": "phone", "value": phone(n)}], "category": "telecom_fraud", "confidence": 70}


@dataclass
class Submission:
    """One API request: a single report or a bulk of them; `numbers` name their phone numbers."""

    path: str
    body: dict[str, Any]
    numbers: list[int]
    valid: bool = True


@dataclass
class Answers:
    """What the clients were told: which phone numbers the node accepted, and which it refused."""

    accepted: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)
    cut: int = 0  # requests cut by a kill (sent again)
    errors: list[str] = field(default_factory=list)


class Traffic(threading.Thread):
    """Sends the pending submissions in order until stopped; a request cut by a kill is sent again next round
    (the report id depends on the content only, so a retry of a report stored before the kill finds it)."""

    def __init__(self, api: str, token: str, pending: list[Submission], answers: Answers) -> None:
        super().__init__(daemon=True)
        self.api, self.token, self.pending, self.answers = api, token, pending, answers
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.api, headers={"X-API-Key": self.token}, timeout=30) as client:
            while self.pending and not self.stopping.is_set():
                submission = self.pending[0]
                try:
                    response = client.post(submission.path, json=submission.body)
                except httpx.TransportError:
                    self.answers.cut += 1
                    return  # the node is gone: this submission is first next round
                if response.status_code == 503:  # no alliance key yet, or the store briefly busy
                    time.sleep(0.2)
                    continue
                self.pending.pop(0)
                time.sleep(PACE_S)
                if response.status_code == 202 and submission.valid:
                    self.answers.accepted.update(submission.numbers)
                elif response.status_code == 422 and not submission.valid:
                    self.answers.refused.update(submission.numbers)
                else:
                    self.answers.errors.append(f"{submission.path}: {response.status_code} {response.text[:300]}")

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        assert not self.is_alive()


def submissions(rng: random.Random) -> list[Submission]:
    """Singles interleaved with bulks of a few hundred, and one bulk with a bad row (refused whole)."""
    work: list[Submission] = []
    n = 0
    for round_ in range(KILLS + 1):
        for _ in range(rng.randint(8, 15)):
            work.append(Submission("/v1/fraud/reports", report_body(n), [n]))
            n += 1
        size = rng.randint(200, 400)
        work.append(Submission("/v1/fraud/reports/bulk", {"reports": [report_body(i) for i in range(n, n + size)]},
                               list(range(n, n + size))))
        n += size
        if round_ == 2:
            bad = [report_body(i) for i in range(n, n + 50)]
            bad[17]["identifiers"][0]["value"] = "12"  # too short: the whole request is refused
            work.append(Submission("/v1/fraud/reports/bulk", {"reports": bad}, list(range(n, n + 50)), valid=False))
            n += 50
    return work


CSV_NUMBERS = range(10_000_000, 10_001_500)  # the phone numbers of the CSV file


@dataclass
class NodeProcess:
    env: dict[str, str]
    api_port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        self.runs += 1
        with self.log.open("ab") as log:
            log.write(f"\n===== run {self.runs} =====\n".encode())
            self.process = subprocess.Popen([*ALLIANCE, "node", "start", "--port", str(self.api_port)], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the node exited with {self.process.returncode}; see {self.log}"
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the node did not answer within 90 s; see {self.log}")

    def kill(self) -> None:
        assert self.process is not None and self.process.poll() is None, f"the node died by itself; see {self.log}"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(60)

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """Another `alliance` command on the node's data dir, running beside it."""
        return subprocess.Popen([*ALLIANCE, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ALLIANCE, *args], env=self.env, capture_output=True, text=True, timeout=120)


def eventually(probe: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout} s")


def publish_batch_records(rpc_url: str, ledger_address: str) -> list[tuple[int, bytes]]:
    """(epoch, indicator) of every record of every successful publishBatch transaction to the ledger, read block by
    block from the chain; each such transaction must have emitted its BatchPublished event."""
    chain = ChainClient(rpc_url)
    ledger = chain.contract("FraudLedger", ledger_address)
    found: list[tuple[int, bytes]] = []
    published_txs = set()
    for number in range(chain.block_number() + 1):
        block = chain.rpc("eth_getBlockByNumber", [hex(number), True])
        for tx in block["transactions"]:
            if (tx.get("to") or "").lower() != ledger_address.lower():
                continue
            function, args = ledger.decode_function_input(tx["input"])
            if function.fn_name != "publishBatch":
                continue
            if int(chain.rpc("eth_getTransactionReceipt", [tx["hash"]])["status"], 16) != 1:
                continue  # refused (a duplicate root sent again): it recorded nothing
            published_txs.add(tx["hash"].lower())
            found += [(int(args["epoch"]), record.indicator) for record in unpack_records(bytes(args["records"]))]
    events = ledger.events.BatchPublished().get_logs(from_block=0)
    assert {log["transactionHash"].to_0x_hex().lower() for log in events} == published_txs
    assert len(events) == len(published_txs)
    return found


def snapshot(settings: Any, rpc_url: str) -> str:
    """Where the node stood when it was killed (printed, for the report of a failure)."""
    peek = NodeContext(settings)
    try:
        with peek.store.session() as session:
            outbox = Counter(session.scalars(select(OutboxRecord.state)))
            batches = Counter(session.scalars(select(PublishBatch.state)))
            mirrored = session.scalars(select(SyncState.last_block)).all()
        envelopes = len(peek.registry().key_envelopes())
        return (f"outbox {dict(outbox)}, batches {dict(batches)}, mirror at {mirrored}, head "
                f"{ChainClient(rpc_url).block_number()}, {envelopes} key envelopes")
    finally:
        peek.close()


def where_they_stand(settings: Any, rpc_url: str, missing: set[int], keys: dict[int, bytes]) -> str:
    """For the report of a failure: where the outbox rows of the missing numbers stand (none: never stored), and for
    each of their batches whether the chain's root index has it and whether a block holds its transaction (a chain
    whose state is ahead of its blocks has the first and not the second)."""
    indicators = [indicator_hash(key, IdentifierType("phone"), normalise("phone", phone(number)))
                  for number in missing for key in keys.values()]
    peek = NodeContext(settings)
    try:
        ledger, chain = peek.fraud_ledger(), ChainClient(rpc_url)
        with peek.store.session() as session:
            rows = session.scalars(select(OutboxRecord.publish_batch_id).where(
                OutboxRecord.indicator.in_(indicators))).all()
            batches = [session.get_one(PublishBatch, batch_id) for batch_id in sorted({r for r in rows if r})]
            stands = []
            for batch in batches:
                receipt = chain.receipt_of(batch.tx_hash) if batch.tx_hash else None
                canonical = receipt is not None and chain.rpc(
                    "eth_getBlockByNumber", [hex(receipt.block_number), False])["hash"] == receipt.block_hash
                stands.append(f"batch {batch.id} {batch.state} in block {batch.block_number}, root index "
                              f"{ledger.batch_id_of_root(bytes(batch.root), peek.member_id)}, its transaction "
                              + ("in no block" if receipt is None else
                                 f"in {'' if canonical else 'a replaced '}block {receipt.block_number}"))
        return (f"{len(missing)} numbers (e.g. {sorted(missing)[:3]}) with {len(rows)} outbox rows, "
                f"{rows.count(None)} in no batch; " + "; ".join(stands))
    finally:
        peek.close()


@dataclass
class Banks:
    """A (the node under test, on `database_url`) and B, C founding a consortium; D, admitted during the run."""

    a: NodeContext
    b: NodeContext
    c: NodeContext
    d: NodeContext
    deployment_file: Path

    @classmethod
    def found(cls, root: Path, rpc_url: str, database_url: str) -> Banks:
        deployment_file = root / "deployment.json"
        a = make_node(root, rpc_url, deployment_file, "Bank A", "BANK-A", database_url=database_url)
        b, c, d = (make_node(root, rpc_url, deployment_file, f"Bank {x}", f"BANK-{x}") for x in "BCD")
        save_deployment(deploy_consortium(b.signing_chain, network="local",
                                          founders=[this_bank_as_founder(n) for n in (a, b, c)]), deployment_file)
        return cls(a, b, c, d, deployment_file)

    def close(self) -> None:
        for bank in (self.a, self.b, self.c, self.d):
            bank.close()


def kill_chain(chain: DevChain) -> None:
    """`kill -9` of anvil: it loses the blocks after its last state write (at most STATE_INTERVAL_S old)."""
    pid = int(chain.pid_file.read_text())
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # this process started it


@pytest.mark.slow
def test_kill_node_at_random_points_loses_and_duplicates_nothing(tmp_path: Path, store_url: str) -> None:
    rng = random.Random(SEED)
    chain = DevChain(tmp_path / "chain", port=free_port())
    chain.start()
    banks = Banks.found(tmp_path, chain.rpc_url, store_url)
    node = NodeProcess({}, free_port(), tmp_path / "node.log")
    try:
        run_chaos(tmp_path, rng, chain, banks, node)
    finally:
        node.ensure_stopped()
        banks.close()
        chain.stop()


def run_chaos(tmp_path: Path, rng: random.Random, chain: DevChain, banks: Banks, node: NodeProcess) -> None:
    a, b, c, d = banks.a, banks.b, banks.c, banks.d
    with a.store.transaction() as session:
        token = create_api_key(session, Role.analyst, "chaos").token
    a.close()
    node.env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "ALLIANCE_DATA_DIR": str(a.settings.data_dir),
                "ALLIANCE_DEPLOYMENT_FILE": str(banks.deployment_file), "ALLIANCE_KEY_PASSPHRASE": TEST_PASSPHRASE,
                "ALLIANCE_PUBLISH_BATCH_SIZE": str(PUBLISH_BATCH), "ALLIANCE_PUBLISH_MAX_WAIT_S": "0.3",
                "ALLIANCE_PUBLISH_INTERVAL_S": "0.2", "ALLIANCE_SYNC_INTERVAL_S": "0.3",
                "ALLIANCE_KEY_DISTRIBUTION_INTERVAL_S": "0.5"}
    node.env.pop("ALLIANCE_DATABASE_URL", None)  # the node's own, from its config
    csv_file = tmp_path / "reports.csv"
    csv_file.write_text("identifier_type,identifier,category,confidence\n" + "".join(
        f"phone,{phone(n)},money_mule,55\n" for n in CSV_NUMBERS))
    csv_imported = False
    pending = submissions(rng)
    answers = Answers()

    for round_ in range(1, KILLS + 1):
        node.start()
        traffic = Traffic(node.api, token, pending, answers)
        traffic.start()
        importer = None
        if round_ in (2, 4) and not csv_imported:
            importer = node.spawn("fraud", "import", str(csv_file), "--json")
        if round_ == 2:  # B starts key epoch 2 and sends A its key: A's node then hashes new reports under it
            b.registry(signing=True).start_key_epoch()
            sync_keys(b)
        if round_ == 3:  # D is admitted (B proposes, C votes): A's node, the distributor, sends it both keys
            proposal = b.registry(signing=True).propose_admission(d.address, MemberRole.member, "Bank D", "BANK-D",
                                                                  public_key_bytes(d.encryption_key))
            assert c.registry(signing=True).vote(proposal.proposal_id).executed
        if round_ == 4:  # the chain stops (cleanly: it writes its state) and comes back
            time.sleep(rng.uniform(0.2, 1.0))
            chain.stop()
            time.sleep(rng.uniform(1.0, 2.0))
            chain.start()
        if round_ == 5:  # the chain is killed and comes back without its newest blocks
            time.sleep(rng.uniform(0.5, 2.0))
            kill_chain(chain)
            time.sleep(rng.uniform(0.2, 1.0))
            chain.start()
        time.sleep(rng.uniform(0.0, 3.0))
        node.kill()
        traffic.stop()
        print(f"round {round_}: {snapshot(a.settings, chain.rpc_url)}; {answers.cut} requests cut", flush=True)
        if importer is not None:
            if rng.random() < 0.5:
                importer.kill()
            _, err = importer.communicate(timeout=120)
            assert importer.returncode in (0, -signal.SIGKILL), err
            csv_imported = importer.returncode == 0

    # A last run, undisturbed: what was cut is sent again, and everything settles.
    node.start()
    traffic = Traffic(node.api, token, pending, answers)
    traffic.start()
    if not csv_imported:
        imported = node.spawn("fraud", "import", str(csv_file), "--json")
        assert imported.wait(120) == 0, imported.communicate()[1]
    traffic.join(120)
    assert not pending and not answers.errors, answers.errors
    answers.accepted.update(CSV_NUMBERS)
    head = wait_until_settled(NodeContext(a.settings), d)
    assert node.stop() == 0
    assert "Traceback" not in node.log.read_text(errors="replace"), f"a traceback in {node.log}"

    # From the chain alone: each accepted identifier once, under one of the epochs, and nothing else.
    keys = b.keyring.keys()
    assert sorted(keys) == [1, 2]
    sync_keys(c)
    assert c.keyring.keys() == d.keyring.keys() == keys
    owner: dict[tuple[int, bytes], int] = {}
    for number in answers.accepted | answers.refused:
        canonical = normalise("phone", phone(number))
        for epoch, key in keys.items():
            owner[(epoch, indicator_hash(key, IdentifierType("phone"), canonical))] = number
    onchain = publish_batch_records(chain.rpc_url, load_deployment(banks.deployment_file).address("FraudLedger"))
    numbers = Counter(owner.get(record, -1) for record in onchain)
    assert -1 not in numbers, "records on chain that no accepted report holds"
    assert not answers.refused & set(numbers), "a refused bulk request was partly published"
    assert set(numbers) == answers.accepted, "accepted reports missing from the chain: " + where_they_stand(
        a.settings, chain.rpc_url, answers.accepted - set(numbers), keys) + f"; see {node.log}, {chain.state_dir}"
    assert [n for n, count in numbers.items() if count > 1] == [], "reports published twice"
    assert {epoch for epoch, _ in onchain} == {1, 2}

    # The store: nothing left unfinished, and the outbox holds what the chain holds.
    reopened = NodeContext(a.settings)
    try:
        with reopened.store.session() as session:
            outbox = Counter((epoch, bytes(indicator)) for epoch, indicator in session.execute(
                select(OutboxRecord.epoch, OutboxRecord.indicator)))
            assert set(session.scalars(select(OutboxRecord.state))) == {"confirmed"}
            assert set(session.scalars(select(PublishBatch.state))) <= {"confirmed", "failed"}
        assert reopened.keyring.keys() == keys
    finally:
        reopened.close()
    assert outbox == Counter(onchain)

    # The node's mirror against a rebuild from the chain into a fresh store, at the same block.
    digested = node.cli("ledger", "digest", "--block", str(head), "--json")
    assert digested.returncode == 0, digested.stderr
    fresh = make_node(tmp_path, chain.rpc_url, banks.deployment_file, "Bank Z", "BANK-Z")
    try:
        fresh_indexer = indexer_for(fresh)
        fresh_indexer.rebuild()
        rebuilt = node_digest(fresh, fresh_indexer, block=head)
    finally:
        fresh.close()
    assert json.loads(digested.stdout) == rebuilt.to_json()
    assert rebuilt.indicator_count == len(answers.accepted)


def wait_until_settled(a: NodeContext, d: NodeContext) -> int:
    """Wait until every record of A is confirmed, its mirror reaches the head and D holds every key; the head."""
    head = -1

    def settled() -> bool:
        nonlocal head
        with a.store.session() as session:
            states = set(session.scalars(select(OutboxRecord.state)))
            signed = session.scalars(select(PublishBatch.id).where(PublishBatch.state == "signed")).first()
            mirrored = session.get(SyncState, a.fraud_ledger().address)
        head = a.chain.block_number()
        return (states == {"confirmed"} and signed is None and mirrored is not None and mirrored.last_block >= head
                and not sync_keys(d).missing)

    try:
        # Generous: after the chain went back, a transaction sent before the loss is noticed waits out the 60 s
        # receipt timeout first, and a loaded CI machine is slower than a laptop.
        eventually(settled, "every record confirmed, the mirror at the head and D holding both keys", timeout=240)
    finally:
        a.close()
    return head
