"""Loading and ordering extensions, and calling hooks in isolation (no chain needed: hooks are plain calls)."""

from __future__ import annotations

import threading
import time

import pytest

from node.extensions import hookimpl
from node.extensions.isolation import CallTimedOut, DaemonPool
from node.extensions.manager import BUILTIN_MODULES, MAX_HUNG_CALLS, ExtensionManager


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def alliance_api_routers(self) -> list[str]:
        return [self.name]


class Decides(Named):
    @hookimpl
    def alliance_credit_decision(self) -> str:
        return self.name


class DecidesFirst(Named):
    @hookimpl(tryfirst=True)
    def alliance_credit_decision(self) -> str:
        return self.name


class Crashes:
    @hookimpl
    def alliance_api_routers(self) -> list[str]:
        raise RuntimeError("secret 13900000001 in a message")


class UnknownHook:
    @hookimpl
    def alliance_no_such_hook(self) -> None:
        return None


def test_load_extensions_default_order_is_builtins_then_plugins() -> None:
    manager = ExtensionManager(extra_plugins={"zeta": Named("zeta"), "alpha": Named("alpha")})
    assert manager.order == [*BUILTIN_MODULES, "alpha", "zeta"]
    assert all(i.loaded for i in manager.extensions())
    routers = [module for module, _ in manager.call("alliance_api_routers").results]
    assert routers[-2:] == ["alpha", "zeta"]


def test_load_extensions_follows_configured_order_and_disabled() -> None:
    manager = ExtensionManager(enabled=["zeta", "credit_decision", "alpha", "missing"], disabled=["alpha", "gone"],
                               extra_plugins={"zeta": Named("zeta"), "alpha": Named("alpha")})
    assert manager.order == ["zeta", "credit_decision"]
    assert manager.unknown == ["gone", "missing"]  # refused by `node start` (check_extension_names)
    info = {i.name: i for i in manager.extensions()}
    assert info["missing"].error is not None and not info["missing"].loaded
    # Listed too: `node start` refuses the name and sends the operator to `alliance extensions list`.
    assert not info["gone"].loaded and "extensions_disabled" in (info["gone"].error or "")
    assert info["alpha"].error == "not enabled"
    assert "alliance_credit_decision" in info["credit_decision"].hooks


def test_load_extensions_records_a_plugin_named_like_another() -> None:
    """A plugin named like a built-in was dropped without a word: not loaded, not even listed."""
    manager = ExtensionManager(extra_plugins={"credit_decision": Decides("mine")}, disabled=["credit_decision"])
    assert manager.duplicates == ["'credit_decision' of embedded (the name of builtin)"]
    assert "credit_decision" not in manager.order


def test_call_hook_tryfirst_runs_before_configured_order() -> None:
    manager = ExtensionManager(enabled=["one", "two"], extra_plugins={"one": Decides("one"),
                                                                     "two": DecidesFirst("two")})
    assert manager.call("alliance_credit_decision", firstresult=True).first == ("two", "two")


def test_load_extension_with_unknown_hook_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    manager = ExtensionManager(enabled=["bad", "good"], extra_plugins={"bad": UnknownHook(), "good": Named("good")})
    info = {i.name: i for i in manager.extensions()}
    assert not info["bad"].loaded and "PluginValidationError" in (info["bad"].error or "")
    assert manager.order == ["good"]
    # Said when the node starts (it was only in `alliance extensions list`): the bank's rules are not applied.
    assert "extension bad not loaded" in caplog.text and "alliance_no_such_hook" in caplog.text


class WrapsDecisions:
    @hookimpl(wrapper=True)
    def alliance_credit_decision(self) -> object:
        decision = yield
        return decision


class DecidesToo(Named):
    @hookimpl
    def alliance_credit_decision(self) -> str:
        return self.name


def test_load_extension_with_a_hook_wrapper_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    """Hooks are called one implementation at a time, so a wrapper never ran: it was listed as loaded and its rule
    silently not applied."""
    manager = ExtensionManager(enabled=["wraps", "good"],
                               extra_plugins={"wraps": WrapsDecisions(), "good": DecidesToo("good")})
    info = {i.name: i for i in manager.extensions()}
    assert not info["wraps"].loaded and "wrapper" in (info["wraps"].error or "")
    assert "alliance_credit_decision" in (info["wraps"].error or "")
    assert manager.order == ["good"] and manager.call("alliance_credit_decision").results == [("good", "good")]
    assert "extension wraps not loaded" in caplog.text


def test_call_hook_isolates_exception_without_its_message(caplog: pytest.LogCaptureFixture) -> None:
    manager = ExtensionManager(enabled=["crashes", "good"], extra_plugins={"crashes": Crashes(),
                                                                           "good": Named("good")})
    outcome = manager.call("alliance_api_routers")
    assert [f.to_json() for f in outcome.failures] == [{"module": "crashes", "hook": "alliance_api_routers",
                                                       "error": "RuntimeError"}]
    assert outcome.results == [("good", ["good"])]
    assert "13900000001" not in caplog.text


class Exits:
    @hookimpl
    def alliance_api_routers(self) -> list[str]:
        raise SystemExit(3)  # a library calling sys.exit() on an error


@pytest.mark.parametrize("timeout_s", [2.0, 0], ids=["on_a_worker", "inline"])
def test_call_hook_isolates_an_extension_calling_sys_exit(timeout_s: float) -> None:
    manager = ExtensionManager(enabled=["exits", "good"], timeout_s=timeout_s,
                               extra_plugins={"exits": Exits(), "good": Named("good")})
    outcome = manager.call("alliance_api_routers")
    assert [(f.module, f.error) for f in outcome.failures] == [("exits", "SystemExit")]
    assert outcome.results == [("good", ["good"])]


class Hangs:
    """Answers only once `release` is set (or after 30 s)."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    @hookimpl
    def alliance_api_routers(self) -> list[str]:
        self.release.wait(30)
        return ["late"]


def test_call_hook_times_out_a_hanging_extension() -> None:
    release = threading.Event()
    manager = ExtensionManager(enabled=["hangs", "good"], timeout_s=0.2,
                               extra_plugins={"hangs": Hangs(release), "good": Named("good")})
    started = time.monotonic()
    outcome = manager.call("alliance_api_routers")
    release.set()
    assert time.monotonic() - started < 2
    assert [(f.module, f.error) for f in outcome.failures] == [("hangs", "timeout")]
    assert outcome.results == [("good", ["good"])]


def test_an_extension_whose_calls_hang_holds_at_most_max_hung_calls_threads() -> None:
    """Each hung call kept a worker thread and the next call started another: a plugin that never answered took a
    thread per application until none could start, and then every module's calls failed."""
    release = threading.Event()
    manager = ExtensionManager(enabled=["hangs", "good"], timeout_s=0.1,
                               extra_plugins={"hangs": Hangs(release), "good": Named("good")})
    try:
        errors = [f.error for _ in range(MAX_HUNG_CALLS + 5)
                  for f in manager.call("alliance_api_routers").failures if f.module == "hangs"]
        assert errors == ["timeout"] * MAX_HUNG_CALLS + ["hung"] * 5
        assert manager._pool._started <= MAX_HUNG_CALLS + 1  # the hung ones, and one for "good"
        assert manager.call("alliance_api_routers").results == [("good", ["good"])]
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while manager._pool.hung("hangs") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert manager.call("alliance_api_routers").results == [("hangs", ["late"]), ("good", ["good"])]


def test_call_hook_rejects_answer_of_wrong_type() -> None:
    manager = ExtensionManager(enabled=["good"], extra_plugins={"good": Named("good")})
    outcome = manager.call("alliance_api_routers", expect=dict)
    assert [(f.module, f.error) for f in outcome.failures] == [("good", "bad_answer:list")]


def test_daemon_pool_reuses_idle_workers_and_raises_timeout() -> None:
    pool = DaemonPool("test")
    assert [pool.call(lambda i=i: i * 2, timeout_s=1) for i in range(20)] == [i * 2 for i in range(20)]
    assert pool._started == 1
    with pytest.raises(CallTimedOut):
        pool.call(time.sleep, 0.5, timeout_s=0.05)
    with pytest.raises(ZeroDivisionError):
        pool.call(lambda: 1 / 0, timeout_s=1)
