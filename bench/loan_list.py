"""Benchmark of listing a large pool version's loan ids (`alliance assets loans POOL --out FILE`): memory stays flat.

    python bench/loan_list.py             # a version of 200,000 loans against one of 1,000
    python bench/loan_list.py --quick     # 20,000 loans
    python bench/loan_list.py --loans N

A real node (its own data dir, SQLite store, keys; a private anvil for its deployment) imports and anchors a small
pool (1,000 loans) and a large one (`--loans`). Then:
- `alliance assets loans POOL --out FILE` runs as its own process for each pool; its peak RSS (`cli_rss_*_mb`) and
  time are measured. Streamed, the large version's list costs the process no more memory than the small one's
  (`cli_rss_growth_mb`, the difference), while the file it writes grows with the version;
- in this process, the Python memory allocated at the peak (tracemalloc) while the large version's ids are written
  a slice at a time as the command does (`streamed_peak_mb`), against reading them into one list first
  (`whole_list_peak_mb`), the memory a million-loan version would have cost five times over.
The file written must hold every id of the version, in version order.
Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a plain checkout

from bench._common import BENCH_PASSPHRASE, emit, member_node, parse_args, private_chain
from bench.assets import tape_text
from node.assets.pools import anchor_draft, import_tape
from node.assets.version_loans import AnchoredVersion, anchored_version, iter_loan_ids, loan_ids_page
from node.private_files import write_private_chunks
from node.runtime import NodeContext

SMALL_POOL = 1_000


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loans", type=int, default=200_000, help="the large version's loans (default 200,000)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, _options)
    loans = 20_000 if args.quick else args.loans
    print(f"loan list: a version of {loans:,} loans against one of {SMALL_POOL:,}")
    with private_chain() as rpc_url, tempfile.TemporaryDirectory(prefix="alliance-bench-") as directory:
        node = member_node(rpc_url, directory, "BENCH-LIST", key_seed=5)
        start = time.perf_counter()
        for pool, count in (("small", SMALL_POOL), ("large", loans)):
            tape = Path(directory) / f"{pool}.csv"
            tape.write_text(tape_text(count))
            import_tape(node, pool, tape)
            # tape_text names the same first loans in both tapes: pledged twice, on purpose here.
            anchor_draft(node, pool, override_reason="benchmark")
            tape.unlink()
        print(f"set-up:       {time.perf_counter() - start:8.2f} s   import and anchor both")
        version = anchored_version(node.store, "large")
        start = time.perf_counter()
        _write_streamed(node, version, Path(directory) / "streamed.txt")
        streamed_s = time.perf_counter() - start
        streamed_peak, whole_peak = _in_process_peaks(node, version, Path(directory))
        node.close()
        runs = {pool: _cli_run(Path(directory), rpc_url, pool) for pool in ("small", "large")}
        listed = (Path(directory) / "large.txt").read_text().splitlines()
    if len(listed) != loans or len(set(listed)) != loans or not all(len(i) == 66 for i in listed):
        raise SystemExit(f"the list holds {len(listed):,} lines, not the version's {loans:,} distinct ids")
    (small_rss, small_s), (large_rss, large_s) = runs["small"], runs["large"]
    print(f"CLI, {SMALL_POOL:,} loans: {small_rss:8.1f} MB peak RSS, {small_s:.2f} s")
    print(f"CLI, {loans:,} loans: {large_rss:8.1f} MB peak RSS, {large_s:.2f} s ({loans / large_s:,.0f} ids/s)")
    print(f"in process:   {streamed_s:8.2f} s streamed ({loans / streamed_s:,.0f} ids/s); {streamed_peak:.2f} MB "
          f"allocated at the peak streamed, {whole_peak:.2f} MB as one list")
    emit({
        "loans": loans,
        "cli_rss_small_mb": round(small_rss, 1),
        "cli_rss_large_mb": round(large_rss, 1),
        "cli_rss_growth_mb": round(large_rss - small_rss, 1),
        "cli_small_s": round(small_s, 2),
        "cli_large_s": round(large_s, 2),
        "streamed_s": round(streamed_s, 4),  # 300 ids (the test's run) stream in well under 10 ms
        "streamed_peak_mb": round(streamed_peak, 2),
        "whole_list_peak_mb": round(whole_peak, 2),
    })
    return 0


def _write_streamed(node: NodeContext, version: AnchoredVersion, path: Path) -> None:
    """What `alliance assets loans POOL --out FILE` does once the version is found."""
    write_private_chunks(path, ("".join(f"0x{i.hex()}\n" for i in ids).encode("ascii")
                                for ids in iter_loan_ids(node.store, version)))


def _in_process_peaks(node: NodeContext, version: AnchoredVersion, directory: Path) -> tuple[float, float]:
    """Python memory allocated at the peak (MB) writing the version's ids streamed, and reading them whole."""
    tracemalloc.start()
    try:
        _write_streamed(node, version, directory / "traced.txt")
        streamed = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        whole = loan_ids_page(node.store, version, after=None, limit=version.loan_count).loan_ids
        whole_peak = tracemalloc.get_traced_memory()[1]
        del whole
    finally:
        tracemalloc.stop()
    return streamed / 2**20, whole_peak / 2**20


# The command's own peak: the ru_maxrss of a child (wait4) starts from its parent's RSS at the fork on Linux (here the
# node that imported the pools), so the child reports the high-water mark of its own image (VmHWM, reset by exec).
_REPORT_PEAK = """
import atexit, os, re, sys
def _peak():
    with open("/proc/self/status") as status, open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))
atexit.register(_peak)
from alliance_cli.main import run
run()
"""


def _cli_run(directory: Path, rpc_url: str, pool: str) -> tuple[float, float]:
    """`alliance assets loans POOL --out DIR/POOL.txt` as its own process: its peak RSS (MB) and time (s)."""
    peak_file = directory / f"{pool}.peak"
    env = {**os.environ, "ALLIANCE_DATA_DIR": str(directory), "ALLIANCE_RPC_URL": rpc_url,
           "ALLIANCE_KEY_PASSPHRASE": BENCH_PASSPHRASE, "BENCH_PEAK_FILE": str(peak_file)}
    command = [sys.executable, "-c", _REPORT_PEAK, "assets", "loans", pool, "--out", str(directory / f"{pool}.txt")]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"`alliance assets loans {pool}` failed: {done.stderr}")
    return int(peak_file.read_text()) / 1024, elapsed


if __name__ == "__main__":
    raise SystemExit(main())
