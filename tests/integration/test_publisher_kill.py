"""`kill -9` of a real publishing process at arbitrary moments: nothing lost, nothing published twice.

The publisher runs as `alliance fraud publish` in its own process, with small batches so that a kill
lands between (and inside) its durable steps; it is killed several times at random delays, then run to
completion. The chain must then hold exactly the accepted records, each once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from node.ledger.reports import ReportRequest
from node.store.ledger_tables import OutboxRecord
from tests.conftest import TEST_PASSPHRASE, LedgerNodes
from tests.ledger.test_publisher import give_alliance_key, onchain_records

ALLIANCE = Path(sys.executable).parent / "alliance"
REPORTS = 600
BATCH = 5


@pytest.mark.slow
def test_kill_publisher_repeatedly_then_finish_publishes_each_record_once(ledger_nodes: LedgerNodes) -> None:
    bank = ledger_nodes.nodes[0]
    give_alliance_key(bank)
    bank.report_intake.accept_many([ReportRequest([("phone", f"+86135{n:08d}")], "telecom_fraud", 60)
                                    for n in range(REPORTS)], submitted_by="test")
    env = {**os.environ, "ALLIANCE_DATA_DIR": str(bank.settings.data_dir),
           "ALLIANCE_DEPLOYMENT_FILE": str(ledger_nodes.deployment_file),
           "ALLIANCE_KEY_PASSPHRASE": TEST_PASSPHRASE, "ALLIANCE_PUBLISH_BATCH_SIZE": str(BATCH)}
    rng = random.Random(11)
    kills = 0
    for _ in range(4):
        process = subprocess.Popen([str(ALLIANCE), "fraud", "publish"], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 2.5))  # start-up takes about a second; then it publishes batch after batch
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 3, "the publisher finished before the kills; make the workload larger"
    finished = subprocess.run([str(ALLIANCE), "fraud", "publish", "--json"], env=env, capture_output=True,
                              text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr

    with bank.store.session() as session:
        accepted = Counter(session.scalars(select(OutboxRecord.indicator)))
        assert set(session.scalars(select(OutboxRecord.state))) == {"confirmed"}
    onchain = Counter(record.indicator for record in onchain_records(bank.fraud_ledger()))
    assert sum(accepted.values()) == REPORTS
    assert onchain == accepted  # every accepted record on chain, none twice
