"""Benchmark of `alliance fraud import` on a large file: time, peak memory, and how long API writes wait meanwhile.

    python bench/report_import.py                 # 300,000 rows
    python bench/report_import.py --rows 50000    # quicker
    python bench/report_import.py --postgres postgresql+psycopg://user:pw@host/db   # the store in a new schema

A real node (its own data dir, SQLite store, keys; a private anvil for its deployment) imports a CSV of `--rows`
rows: single-row reports of one phone number each, and every 20th pair of rows one report of two. Meanwhile a second
process on the same store accepts one report every 50 ms, as the API would (ReportIntake.accept), and times each
write: the longest shows how long the import kept the store's write lock. Memory: the importing process's resident
set sampled every 50 ms during the import, and before it (the node's start-up, web3 included).
Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a plain checkout

from bench._common import BENCH_PASSPHRASE, emit, member_node, postgres_schema, private_chain

WRITE_EVERY_S = 0.05

# The import runs in a process of its own, as `alliance fraud import` does: its peak memory is its own.
IMPORTER = """
import json, resource, sys, threading, time
from pathlib import Path
from node.config import Network, load_settings
from node.ledger.report_import import import_reports
from node.runtime import NodeContext

directory, rpc_url, passphrase, path = sys.argv[1:5]
node = NodeContext(load_settings(Path(directory), network=Network.local, rpc_url=rpc_url, key_passphrase=passphrase,
                                 deployment_file=Path(directory) / "deployment.json"))
node.report_intake.current_key()

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

before, peak, done = rss_mb(), [0.0], threading.Event()

def sample():  # the resident set now and then: ru_maxrss would report the start-up's peak, not the import's
    while not done.wait(0.05):
        peak[0] = max(peak[0], rss_mb())

threading.Thread(target=sample, daemon=True).start()
start = time.perf_counter()
result = import_reports(node.report_intake, Path(path), submitted_by="bench")
seconds = time.perf_counter() - start
done.set()
print(json.dumps({"seconds": seconds, "rows": result.rows, "reports": result.reports,
                  "peak_rss_mb": max(peak[0], rss_mb()), "rss_before_mb": before,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

WRITER = """
import json, sys, time
from pathlib import Path
from node.config import Network, load_settings
from node.ledger.reports import ReportRequest
from node.runtime import NodeContext

directory, rpc_url, passphrase, stop = sys.argv[1:5]  # and the pause between writes
node = NodeContext(load_settings(Path(directory), network=Network.local, rpc_url=rpc_url, key_passphrase=passphrase,
                                 deployment_file=Path(directory) / "deployment.json"))
waits, n = [], 0
while not Path(stop).exists():
    start = time.perf_counter()
    node.report_intake.accept(ReportRequest([("phone", f"+86137{n:08d}")], "telecom_fraud", 80), submitted_by="api")
    waits.append(time.perf_counter() - start)
    n += 1
    print("ready", flush=True) if n == 1 else None
    time.sleep(float(sys.argv[5]))
waits.sort()
print(json.dumps({"writes": len(waits), "max_s": waits[-1], "p99_s": waits[int(len(waits) * 0.99)],
                  "median_s": waits[len(waits) // 2]}), flush=True)
"""


def write_file(path: Path, rows: int) -> None:
    with path.open("w") as handle:
        handle.write("report,identifier_type,identifier,category,confidence,valid_days\n")
        for n in range(rows):
            group = f"g{n // 2}" if n % 40 in (0, 1) else ""
            handle.write(f"{group},phone,+86139{n:08d},telecom_fraud,80,365\n")


def main() -> None:
    rows = int(sys.argv[sys.argv.index("--rows") + 1]) if "--rows" in sys.argv else 300_000
    postgres = sys.argv[sys.argv.index("--postgres") + 1] if "--postgres" in sys.argv else None
    with ExitStack() as stack:
        rpc_url = stack.enter_context(private_chain())
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="alliance-bench-import-"))
        store = {} if postgres is None else {"database_url": stack.enter_context(postgres_schema(postgres, "imp"))}
        node = member_node(rpc_url, directory, "BENCH-IMPORT", key_seed=5, **store)
        path = Path(directory) / "reports.csv"
        write_file(path, rows)
        size = path.stat().st_size
        stop = Path(directory) / "stop"
        env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        writer = subprocess.Popen([sys.executable, "-c", WRITER, directory, rpc_url, BENCH_PASSPHRASE, str(stop),
                                   str(WRITE_EVERY_S)], stdout=subprocess.PIPE, text=True, env=env)
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        done = subprocess.run([sys.executable, "-c", IMPORTER, directory, rpc_url, BENCH_PASSPHRASE, str(path)],
                              capture_output=True, text=True, check=True, env=env)
        imported = json.loads(done.stdout.strip().splitlines()[-1])
        stop.touch()
        waits = json.loads(writer.stdout.readline())
        writer.wait(timeout=30)
        node.close()
    seconds = imported["seconds"]
    print(f"imported {imported['rows']:,} rows ({imported['reports']:,} reports, {size / 2**20:.1f} MiB) in "
          f"{seconds:.1f} s: {imported['rows'] / seconds:,.0f} rows/s")
    print(f"peak RSS of the importing process {imported['peak_rss_mb']:.0f} MB (before the import "
          f"{imported['rss_before_mb']:.0f} MB)")
    print(f"API writes during the import: {waits['writes']}, longest {waits['max_s']:.3f} s, "
          f"p99 {waits['p99_s']:.3f} s, median {waits['median_s']:.3f} s")
    emit({"store": "postgresql" if postgres else "sqlite", "rows": imported["rows"],
          "file_mib": round(size / 2**20, 1), "reports": imported["reports"],
          "import_s": round(seconds, 1), "rows_per_s": round(imported["rows"] / seconds),
          "peak_rss_mb": round(imported["peak_rss_mb"]), "rss_before_import_mb": round(imported["rss_before_mb"]),
          "api_writes": waits["writes"], "api_write_max_wait_s": round(waits["max_s"], 3),
          "api_write_p99_s": round(waits["p99_s"], 3), "api_write_median_s": round(waits["median_s"], 3)})


if __name__ == "__main__":
    main()
