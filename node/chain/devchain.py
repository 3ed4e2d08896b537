"""The `dev` network: a local anvil the node starts itself, its state persisted in the data dir.

anvil comes from the pinned npm package `@foundry-rs/anvil`. It runs with a zero gas price and
base fee, like the consortium's Besu network, so member accounts need no funding, and with the
`cancun` hardfork to match the production genesis (see docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from node.chain.client import ChainClient, ChainHead, wait_until_reachable
from node.chain.errors import ChainError, ChainUnavailable
from node.paths import NODE_MODULES

DEFAULT_HARDFORK = "cancun"
# anvil writes its state file every few seconds and on a clean stop; an abrupt kill of the dev
# chain can lose at most this window of blocks. Production chains (Besu) persist every block.
STATE_INTERVAL_S = 2
# How long a clean stop waits for anvil to finish the blocks it is mining before it signals it anyway.
QUIESCE_TIMEOUT_S = 10.0
# Past blocks whose state anvil keeps, for reads at an earlier block (`audit verify` reads a sender's membership as of
# each event's block; older ones are refused as history the endpoint no longer has). anvil writes one state per
# block to disk, about 440 KB even for an empty block; by default it keeps them all, in ~/.foundry/anvil/tmp, and
# leaves them there when stopped or killed: a test run's chains of a few thousand blocks each filled a 250 GB disk
# over a day. Bounded (2,000 blocks: about 0.9 GB at most), and kept in the chain's dir.
PERSISTED_STATES = 2_000
_NOBODY = "0x0000000000000000000000000000000000000000"


class DevChainError(ChainError):
    """The local dev chain could not be started or stopped."""


def find_anvil() -> Path:
    """`ALLIANCE_ANVIL`, else the platform binary from the npm package, else `anvil` on PATH."""
    configured = os.environ.get("ALLIANCE_ANVIL")
    if configured:
        return Path(configured)
    system = {"Linux": "linux", "Darwin": "darwin", "Windows": "win32"}.get(platform.system(), "")
    machine = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine(), "")
    # The platform binary directly, not the npm `bin.mjs` shim: signals must reach anvil itself.
    binary = NODE_MODULES / "@foundry-rs" / f"anvil-{system}-{machine}" / "bin" / "anvil"
    if binary.exists():
        return binary
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    raise DevChainError("anvil not found: run `make setup` (npm ci installs the pinned @foundry-rs/anvil)")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


class DevChain:
    """Starts, finds and stops the anvil process of one data dir."""

    def __init__(self, state_dir: Path, *, port: int = 8545, chain_id: int = 31337,
                 host: str = "127.0.0.1", hardfork: str = DEFAULT_HARDFORK,
                 persisted_states: int = PERSISTED_STATES) -> None:
        self.hardfork = hardfork
        self.persisted_states = persisted_states
        self.state_dir = state_dir
        self.port = port
        self.chain_id = chain_id
        self.host = host

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "anvil.pid"

    @property
    def owner_file(self) -> Path:
        """The pid of the node process that started the chain and stops it when it exits."""
        return self.state_dir / "anvil.owner"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def history_dir(self) -> Path:
        """Where anvil spills past states that do not fit in memory (one process's; useless to the next)."""
        return self.state_dir / "history"

    def command(self) -> list[str]:
        return [
            str(find_anvil()),
            "--host", self.host, "--port", str(self.port), "--chain-id", str(self.chain_id),
            "--hardfork", self.hardfork, "--gas-price", "0", "--base-fee", "0",
            "--gas-limit", "100000000", "--code-size-limit", "65536",
            "--state", str(self.state_file.resolve()), "--state-interval", str(STATE_INTERVAL_S),
            "--cache-path", str(self.history_dir.resolve()), "--max-persisted-states", str(self.persisted_states),
        ]

    def running_pid(self) -> int | None:
        pid = _pid_in(self.pid_file)
        if pid is None:
            return None
        # Gone, or a stale pid file whose pid was reused since (a reboot, a new container): not this chain.
        if not process_running(pid) or not self._runs_this_chain(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def _runs_this_chain(self, pid: int) -> bool:
        return f"--state {self.state_file.resolve()} " in f"{_command_line(pid)} "

    def start(self, timeout: float = 30.0, *, owned: bool = False) -> ChainHead:
        """Start anvil in the background (idempotent: an already running chain is reused); `owned`: this
        process stops it when it exits, and a later node adopts it if this process is killed first."""
        if self.running_pid() is not None:
            return wait_until_reachable(self.rpc_url, timeout)
        if port_in_use(self.host, self.port):
            raise DevChainError(
                f"port {self.port} is in use by another process; stop it or set ALLIANCE_DEV_CHAIN_PORT")
        command = self.command()
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            # The past states an earlier anvil spilled (it leaves them when stopped or killed): no later process
            # reads them (its state file holds what a restart needs).
            shutil.rmtree(self.history_dir, ignore_errors=True)
            log = (self.state_dir / "anvil.log").open("ab")
        except OSError as exc:  # a read-only or full data dir
            raise self._cannot_write(exc) from None
        with log:  # the child keeps its own descriptor
            try:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:  # ALLIANCE_ANVIL names a file that is missing or not executable
                raise DevChainError(f"cannot run anvil at {command[0]}: {exc.strerror or exc}") from exc
        try:
            self.pid_file.write_text(str(process.pid))
            if owned:
                self.owner_file.write_text(str(os.getpid()))
            else:
                self.owner_file.unlink(missing_ok=True)
        except OSError as exc:
            # Without its pid file nothing would find or stop this anvil: it would hold the port, and the next
            # start would refuse it as "another process".
            process.kill()
            process.wait()
            with contextlib.suppress(OSError):
                self.pid_file.unlink(missing_ok=True)
            raise self._cannot_write(exc) from None
        try:
            return wait_until_reachable(self.rpc_url, timeout, gone=lambda: process.poll() is not None)
        except ChainUnavailable as exc:
            process.kill()
            self.pid_file.unlink(missing_ok=True)
            self.owner_file.unlink(missing_ok=True)
            log_file = self.state_dir / "anvil.log"
            if process.poll() is not None and process.returncode != -signal.SIGKILL:
                raise DevChainError(f"anvil exited with code {process.returncode} before answering; see {log_file}") \
                    from exc
            raise DevChainError(f"anvil did not answer within {timeout}s; see {log_file}") from exc

    def _cannot_write(self, exc: OSError) -> DevChainError:
        return DevChainError(f"cannot write the dev chain's files in {self.state_dir}: {exc.strerror or exc}")

    def _stop_mining(self) -> None:
        """Switch mining off and wait until no block is being mined, so that the state anvil writes on SIGTERM is
        that of a still chain. anvil (1.7) writes its blocks first and its accounts after, waiting for the block
        being executed: a block mined meanwhile was saved in the accounts only, and the chain came back with the
        effects of transactions no block holds (a batch the contract knows and no event shows, its records on
        no node's mirror, and a publisher that finds the root on chain never sends them again). Transactions that
        arrive after this wait in the pool and are dropped with it, as any the chain had not mined yet."""
        client = ChainClient(self.rpc_url, request_timeout=QUIESCE_TIMEOUT_S)
        deadline = time.monotonic() + QUIESCE_TIMEOUT_S
        try:
            client.rpc("evm_setAutomine", [False])
            head = client.block_number()
            while time.monotonic() < deadline:
                # A read of the state waits for the block being executed; a head that stays put across it and a
                # pause means no block was queued behind that one either.
                client.rpc("eth_getBalance", [_NOBODY, "latest"])
                time.sleep(0.05)
                head, before = client.block_number(), head
                if head == before:
                    return
        except ChainError:
            return  # not answering (hung or going): the signal still ends it, as before

    def adopt_orphan(self) -> bool:
        """Take over the running chain if the node process that owned it is gone (killed, so it could not stop
        it): this process stops it when it exits. False if the chain runs on its own (`chain up`) or its owner
        is alive."""
        owner = _pid_in(self.owner_file)
        if owner is None or process_running(owner):
            return False
        try:
            self.owner_file.write_text(str(os.getpid()))
        except OSError as exc:
            raise self._cannot_write(exc) from None
        return True

    def stop_if_owned(self) -> bool:
        """`stop` the chain if this process still owns it. A `chain down` and `chain up` while the node ran made it a
        chain of its own, which outlives the node as any `chain up` one does: the node stopped it at exit."""
        if _pid_in(self.owner_file) != os.getpid():
            return False
        return self.stop()

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop anvil cleanly so that it writes its state; returns False if it was not running."""
        pid = self.running_pid()
        if pid is None:
            return False
        self._stop_mining()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process_running(pid):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        self.owner_file.unlink(missing_ok=True)
        shutil.rmtree(self.history_dir, ignore_errors=True)  # anvil leaves its spilled states behind
        return True


def _pid_in(path: Path) -> int | None:
    """The pid a pid file names; None if there is no file or it holds no number."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def process_running(pid: int) -> bool:
    """Whether process `pid` runs: not gone, and not a zombie (exited, its parent yet to collect it)."""
    _reap(pid)  # this process's own child that exited is collected here, or it would stay a zombie
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether `pid` exited and waits for its parent to collect it. `chain down` beside the running node that started
    the chain: anvil exited on SIGTERM at once, but stayed the node's zombie, which a signal of 0 finds; the stop
    waited its whole timeout and then sent SIGKILL to a process that had saved its state and gone."""
    if not Path("/proc/self").exists():  # macOS
        try:
            state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout
        except OSError:
            return False
        return state.strip().startswith("Z")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]  # "pid (name) state ...": the name may hold ") "


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:  # no /proc (macOS), or the process is gone
        return subprocess.run(["ps", "-ww", "-o", "command=", "-p", str(pid)], capture_output=True,
                              text=True).stdout


def _reap(pid: int) -> None:
    # When this process started anvil, it must collect the exit status or anvil stays a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
