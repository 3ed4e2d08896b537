"""Benchmark of identifier checks over HTTP: batch throughput, single-check cost against a trivial route, latency.

    python bench/checks.py            # 100,000 mirror records, 10 batches of 10,000, 10 s per load phase
    python bench/checks.py --quick    # 10,000 mirror records, 3 batches, 3 s per load phase

A real node (its own data dir, keys, SQLite store, one alliance key epoch) is seeded directly with mirror
rows, as its indexer would write them, then served by uvicorn in a subprocess on a free port (one process,
FastAPI's thread pool). The load generator runs in this process (asyncio + httpx).

- `batch_identifiers_per_s`: `POST /v1/checks/batch` with 10,000 distinct identifiers per request (40% phone
  numbers, 30% resident IDs, 30% bank cards, in varied formats; 10% of them reported), requests back to back.
- `single_check_ratio_to_trivial`: requests/s of `POST /v1/checks/identity` with one phone number, divided by
  requests/s of `GET /v1/fraud/reports/{unknown id}` (API-key check, one primary-key lookup, 404) measured
  the same way: 32 concurrent clients for a fixed time. Both routes authenticate; the check also normalises,
  hashes, looks up the mirror and writes its query-log row (a committed SQLite write).
- `p50_ms`, `p99_ms`: latency of those single checks at 32 concurrent clients.

The profile (cProfile, in process, one batch of 10,000 through `check_batch`) says where the batch path's
time goes. Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a plain checkout

from bench._common import emit, free_port, parse_args

BATCH = 10_000
CONCURRENCY = 32
HIT_SHARE = 0.1
REGIONS = ("110105", "310115", "440305", "330106", "510104")


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, help="mirror records to seed (default 100,000; quick 10,000)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # internal: run the server of a data dir
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)


# -- identifiers -----------------------------------------------------------------------------------------------
def phone(i: int) -> tuple[str, str, str]:
    """(type, raw as a customer might type it, canonical) of the i-th phone number."""
    digits = f"139{i:08d}"
    raw = (digits, f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}", f"{digits[:3]}-{digits[3:7]}-{digits[7:]}")[i % 3]
    return "phone", raw, "+86" + digits


def resident_id(i: int) -> tuple[str, str, str]:
    from stdnum.cn import ric

    birth = f"{1950 + i % 50}{1 + i % 12:02d}{1 + i % 28:02d}"
    body = f"{REGIONS[i % len(REGIONS)]}{birth}{i // 50 % 1000:03d}"
    number = body + ric.calc_check_digit(body + "0")  # it expects a placeholder check digit
    return "cn_resident_id", number if i % 2 else number.lower(), number


def bank_card(i: int) -> tuple[str, str, str]:
    from stdnum import luhn

    body = f"622202{i:012d}"
    number = body + luhn.calc_check_digit(body)
    return "bank_card", number if i % 2 else " ".join(number[k:k + 4] for k in range(0, 19, 4)), number


def identifier(i: int) -> tuple[str, str, str]:
    return (phone, phone, phone, phone, resident_id, resident_id, resident_id, bank_card, bank_card,
            bank_card)[i % 10](i)


# -- node ------------------------------------------------------------------------------------------------------
def prepare_node(data_dir: Path, records: int, rng: random.Random) -> tuple[Any, str, str]:
    """Initialise a node, give it an alliance key, seed the mirror; (node, workflow token, analyst token)."""
    from sqlalchemy import insert

    from node.auth.apikeys import Role, create_api_key
    from node.config import load_settings
    from node.crypto.keyed_hash import indicator_hash
    from node.runtime import NodeContext
    from node.setup import init_node
    from node.store.ledger_tables import MirrorBatch, MirrorRecord

    settings = load_settings(data_dir)
    init_node(settings, bank_name="Bench Bank", bank_code="BENCH", passphrase=settings.passphrase or "")
    node = NodeContext(load_settings(data_dir))
    key = os.urandom(32)
    node.keyring.store_key(1, key, source="generated")
    now = int(time.time())
    # Every tenth identifier of the check range [0, records) is reported; the rest of the mirror holds
    # identifiers no check asks about (indices from 10**7 up), so the table has `records` rows.
    reported = [identifier(i) for i in range(0, records, int(1 / HIT_SHARE))]
    others = [identifier(10**7 + i) for i in range(records - len(reported))]
    rows = []
    for n, (kind, _, canonical) in enumerate([*reported, *others]):
        rows.append({"batch_id": 1 + n // 1000, "position": n % 1000, "indicator": indicator_hash(key, kind, canonical),
                     "identifier_type": {"phone": 3, "cn_resident_id": 1, "bank_card": 4}[kind],
                     "category": rng.randrange(1, 10), "confidence": rng.randrange(30, 101),
                     "valid_from": now - rng.randrange(365 * 86_400), "valid_until": now + 365 * 86_400,
                     "evidence_hash": os.urandom(32), "case_ref_hash": os.urandom(32),
                     "reporter_member_id": 2 + n % 5, "epoch": 1, "block_number": 10 + n // 1000,
                     "published_at": now - 86_400})
    with node.store.transaction() as session:
        session.execute(insert(MirrorBatch), [
            {"batch_id": b, "reporter_member_id": 2 + (b - 1) * 1000 % 5, "epoch": 1, "root": os.urandom(32),
             "record_count": 1000, "accepted_count": 1000, "tx_hash": "0x" + os.urandom(32).hex(),
             "block_number": 9 + b, "log_index": 0, "published_at": now - 86_400}
            for b in range(1, 2 + (len(rows) - 1) // 1000)])
        for start in range(0, len(rows), 10_000):
            session.execute(insert(MirrorRecord), rows[start:start + 10_000])
        workflow = create_api_key(session, Role.workflow, "bench").token
        analyst = create_api_key(session, Role.analyst, "bench").token
    return node, workflow, analyst


def serve(data_dir: Path, port: int) -> None:
    """The node's API as `alliance node start` serves it (without the background workers)."""
    from node.api.app import create_app
    from node.config import load_settings
    from node.runtime import NodeContext
    from node.server import listening_sockets, run_api

    run_api(create_app(NodeContext(load_settings(data_dir))), sockets=listening_sockets("127.0.0.1", port),
            log_level="warning")


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(data_dir), "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/openapi.json", timeout=1)
            return process, base
        except httpx.TransportError:
            if process.poll() is not None:
                raise RuntimeError("the benchmark server exited") from None
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("the benchmark server did not start within 60 s")


# -- load ------------------------------------------------------------------------------------------------------
def batch_throughput(base: str, token: str, requests: int, records: int) -> tuple[float, int]:
    """(identifiers/s over `requests` back-to-back batches of BATCH distinct identifiers, hits seen)."""
    import httpx

    bodies = []
    for r in range(requests):
        start = (r * BATCH) % max(records - BATCH + 1, 1)
        # Encoded before the clock starts: the caller's own JSON encoding is not the node's cost.
        bodies.append(json.dumps({"identifiers": [{"type": k, "value": raw} for k, raw, _ in
                                                  (identifier(start + i) for i in range(BATCH))]}).encode())
    answers = []
    headers = {"X-API-Key": token, "Content-Type": "application/json"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        client.post("/v1/checks/batch", content=bodies[0]).raise_for_status()  # warm-up
        began = time.perf_counter()
        for body in bodies:
            response = client.post("/v1/checks/batch", content=body)
            response.raise_for_status()
            answers.append(response.content)  # received whole: the node's work is done
        elapsed = time.perf_counter() - began
    # Decoded after the clock stops, as the bodies were encoded before it started: the caller's JSON work (some 20
    # ms an answer of 10,000 results) is not the node's, and on 2 cores it left the node idle meanwhile.
    hits = sum(1 for answer in answers for r in json.loads(answer)["results"] if r["hit"])
    return requests * BATCH / elapsed, hits


async def _load(base: str, token: str, method: str, path_of: Any, body_of: Any, seconds: float
                ) -> tuple[float, list[float]]:
    """32 clients sending requests back to back for `seconds`; (requests/s, latencies in ms)."""
    import httpx

    latencies: list[float] = []
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": token}, limits=limits, timeout=60) as client:
        counter = iter(range(10**9))
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                n = next(counter)
                began = time.perf_counter()
                response = await client.request(method, path_of(n), json=body_of(n))
                latencies.append((time.perf_counter() - began) * 1000)
                if response.status_code >= 500:
                    raise RuntimeError(f"{path_of(n)}: {response.status_code} {response.text[:200]}")

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, latencies


def single_checks(base: str, workflow: str, analyst: str, seconds: float) -> dict[str, float]:
    def check_body(n: int) -> dict[str, Any]:
        return {"identifiers": [{"type": "phone", "value": phone(n)[1]}]}

    asyncio.run(_load(base, workflow, "POST", lambda n: "/v1/checks/identity", check_body, 1.0))  # warm-up
    trivial_rps, trivial_latencies = asyncio.run(_load(base, analyst, "GET",
                                                       lambda n: f"/v1/fraud/reports/unknown-{n}",
                                                       lambda n: None, seconds))
    check_rps, latencies = asyncio.run(_load(base, workflow, "POST", lambda n: "/v1/checks/identity",
                                             check_body, seconds))
    cuts, trivial_cuts = statistics.quantiles(latencies, n=100), statistics.quantiles(trivial_latencies, n=100)
    return {"trivial_rps": trivial_rps, "check_rps": check_rps, "p50_ms": cuts[49], "p99_ms": cuts[98],
            "trivial_p50_ms": trivial_cuts[49], "trivial_p99_ms": trivial_cuts[98]}


def profile_batch(node: Any, records: int) -> tuple[float, str]:
    """In-process seconds for one batch of BATCH through check_batch, and the profile's top entries."""
    from node.ledger.checks import check_batch

    pairs = [(k, raw) for k, raw, _ in (identifier(i) for i in range(BATCH))]
    check_batch(node, pairs[:100], "bench")
    began = time.perf_counter()
    check_batch(node, pairs, "bench")
    plain = time.perf_counter() - began
    profiler = cProfile.Profile()
    profiler.enable()
    check_batch(node, pairs, "bench")
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(18)
    return plain, text.getvalue()


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else None, configure=_configure)
    if args.serve:
        serve(args.serve, args.port)
        return
    records = args.records or (10_000 if args.quick else 100_000)
    seconds = 3.0 if args.quick else 10.0
    batches = 3 if args.quick else 10
    with tempfile.TemporaryDirectory(prefix="alliance-bench-checks-") as directory:
        data_dir = Path(directory) / "node"
        began = time.perf_counter()
        node, workflow, analyst = prepare_node(data_dir, records, random.Random(7))
        print(f"seeded {records:,} mirror records in {time.perf_counter() - began:.1f} s")
        in_process_s, profile = profile_batch(node, records)
        print(f"in process: one batch of {BATCH:,} in {in_process_s * 1000:.0f} ms "
              f"({BATCH / in_process_s:,.0f} identifiers/s)")
        print(profile)
        process, base = start_server(data_dir)
        try:
            batch_rate, hits = batch_throughput(base, workflow, batches, records)
            print(f"HTTP batch: {batch_rate:,.0f} identifiers/s ({hits:,} hits in {batches} x {BATCH:,})")
            single = single_checks(base, workflow, analyst, seconds)
            print(f"HTTP single: check {single['check_rps']:,.0f} req/s (p50 {single['p50_ms']:.1f} ms, p99 "
                  f"{single['p99_ms']:.1f} ms), trivial {single['trivial_rps']:,.0f} req/s (p50 "
                  f"{single['trivial_p50_ms']:.1f} ms, p99 {single['trivial_p99_ms']:.1f} ms) at {CONCURRENCY} clients")
        finally:
            process.terminate()
            process.wait(timeout=30)
        node.close()
    emit({
        "records": records,
        "batch_size": BATCH,
        "batch_identifiers_per_s": round(batch_rate),
        "batch_in_process_identifiers_per_s": round(BATCH / in_process_s),
        "single_check_rps": round(single["check_rps"], 1),
        "trivial_rps": round(single["trivial_rps"], 1),
        "single_check_ratio_to_trivial": round(single["check_rps"] / single["trivial_rps"], 3),
        "p50_ms": round(single["p50_ms"], 2),
        "p99_ms": round(single["p99_ms"], 2),
        "trivial_p50_ms": round(single["trivial_p50_ms"], 2),
        "trivial_p99_ms": round(single["trivial_p99_ms"], 2),
        "concurrency": CONCURRENCY,
        "quick": bool(args.quick),
    })


if __name__ == "__main__":
    main()
