"""bench/assets.py on a small version: the benchmark's own checks must hold whatever size it is given."""

from __future__ import annotations

import random

from bench.assets import SINGLE_TX_IDS, anchor_large, make_records
from node.assets.pools import build_tree


def test_anchor_large_on_a_version_no_larger_than_the_single_transaction_baseline() -> None:
    """The double-financing read looked up the version's last id expecting only the chunked pool to hold it: with
    `--loans` or `--anchor-loans` up to SINGLE_TX_IDS the baseline pool holds every id too, and the run ended with
    'the loan is held by pools [1, 2], not [2]' after all its measurements."""
    records = make_records(300, random.Random(7))
    assert len(records) <= SINGLE_TX_IDS
    run = anchor_large(records, build_tree(records).root)
    assert run["double_financing_read_s"] > 0 and run["web3_decoded_read_s"] > 0
