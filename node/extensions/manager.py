"""Loading extensions (built-in modules and installed plugins) and calling their hooks in isolation.

Which extensions run, and in what order, comes from the settings:

- `extensions_enabled`: names in call order; unset means every built-in (in `BUILTIN_MODULES` order) and
  then every plugin installed under the entry-point group `alliance.extensions` (by name);
- `extensions_disabled`: names to leave out (e.g. a built-in the bank replaces with its own);
- `extension_timeout_s`: how long one hook call of one extension may take.

Within a hook, extensions marked `tryfirst` run first and those marked `trylast` last; otherwise the
configured order holds. Each call is isolated: an exception or a timeout becomes a `HookFailure` naming the
extension (the exception's type only: messages may quote customer data), the other extensions still run.
A plugin that fails to import, or implements a hook that does not exist (`check_pending`), is not loaded
and is listed with its error by `alliance extensions list`.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from node.config import ConfigError, Settings
from node.errors import AllianceError
from node.extensions import hookspecs
from node.extensions.isolation import CallTimedOut, DaemonPool

logger = logging.getLogger(__name__)

# Calls of one extension that may hang at once, each holding a worker thread Python cannot stop. Past it the extension
# is not called (its failure is "hung") until one returns: an extension that never answered (a bureau's socket with no
# timeout) took one more thread per hook call, thousands within the hour, until no thread could start and every
# module's calls failed, the built-ins' too.
MAX_HUNG_CALLS = 16

BUILTIN_MODULES = ("credit_platform", "marketing", "identity_recognition", "risk_scoring", "credit_decision",
                   "abs_factory", "risk_operations")


@dataclass(frozen=True)
class ExtensionInfo:
    name: str
    source: str  # "builtin" or "entry point <distribution>"
    loaded: bool
    hooks: tuple[str, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "loaded": self.loaded, "hooks": list(self.hooks),
                "error": self.error}


@dataclass(frozen=True)
class HookFailure:
    module: str
    hook: str
    error: str  # exception type, "timeout", "hung" (not called: too many of its calls still running), "bad_answer:..."

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "hook": self.hook, "error": self.error}


@dataclass
class HookOutcome:
    """What each extension answered (None answers left out), in call order, and which ones failed."""

    results: list[tuple[str, Any]] = field(default_factory=list)
    failures: list[HookFailure] = field(default_factory=list)
    elapsed_ms: dict[str, float] = field(default_factory=dict)

    @property
    def first(self) -> tuple[str, Any] | None:
        return self.results[0] if self.results else None


@dataclass(frozen=True)
class _Candidate:
    name: str
    source: str
    load: Any  # () -> plugin object


class ExtensionManager:
    def __init__(self, *, enabled: Iterable[str] | None = None, disabled: Iterable[str] = (),
                 timeout_s: float = 2.0, extra_plugins: dict[str, Any] | None = None) -> None:
        """`extra_plugins` (name -> plugin object) are offered like installed ones: for tests and embedding."""
        self.timeout_s = timeout_s
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._pool = DaemonPool()
        candidates: dict[str, _Candidate] = {}
        # Plugins whose name another (a built-in, or an earlier plugin) has: never loaded, nor listed otherwise.
        self.duplicates: list[str] = []
        for candidate in _candidates(extra_plugins or {}):
            taken = candidates.setdefault(candidate.name, candidate)  # a plugin cannot take a built-in's name
            if taken is not candidate:
                self.duplicates.append(f"{candidate.name!r} of {candidate.source} (the name of {taken.source})")
        wanted = list(enabled) if enabled is not None else [*BUILTIN_MODULES, *sorted(
            n for n in candidates if n not in BUILTIN_MODULES)]
        skip = set(disabled)
        # Names in the settings that nothing answers to: a typo that would leave a module out, or in.
        self.unknown = sorted({*(enabled or ()), *skip} - candidates.keys())
        self.order = [name for name in dict.fromkeys(wanted) if name not in skip]
        self.info: dict[str, ExtensionInfo] = {}
        for name in self.order:
            self.info[name] = self._load(name, candidates.get(name))
        for name in candidates.keys() - set(self.order):
            self.info[name] = ExtensionInfo(name, candidates[name].source, False, error="not enabled")
        for name in skip - candidates.keys():  # `node start` refuses them and points to `alliance extensions list`
            self.info[name] = ExtensionInfo(name, "unknown", False, error="named in extensions_disabled: no built-in "
                                                                         "module or installed plugin of this name")
        self.order = [name for name in self.order if self.info[name].loaded]

    def _load(self, name: str, candidate: _Candidate | None) -> ExtensionInfo:
        if candidate is None:
            return ExtensionInfo(name, "unknown", False, error="no built-in module or installed plugin of this name")
        try:
            plugin = candidate.load()
            self.pm.register(plugin, name=name)
        except Exception as exc:  # a broken plugin must not stop the node
            logger.warning("extension %s not loaded: %s", name, type(exc).__name__)
            return ExtensionInfo(name, candidate.source, False, error=f"{type(exc).__name__}: {exc}")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:  # a hook name no spec has (a typo): said at start, like the above
            self.pm.unregister(name=name)
            logger.warning("extension %s not loaded: %s", name, exc)
            return ExtensionInfo(name, candidate.source, False, error=f"PluginValidationError: {exc}")
        callers = self.pm.get_hookcallers(self.pm.get_plugin(name)) or []
        wrappers = sorted(caller.name for caller in callers for impl in caller.get_hookimpls()
                          if impl.plugin_name == name and (impl.hookwrapper or impl.wrapper))
        if wrappers:
            # `call` runs each implementation on its own, isolated: a wrapper around the others is never run, so the
            # bank's rule in it (adjusting every decision, say) was silently not applied while listed as loaded.
            self.pm.unregister(name=name)
            error = f"hook wrappers are not supported (wrapper=True or hookwrapper=True): {', '.join(wrappers)}"
            logger.warning("extension %s not loaded: %s", name, error)
            return ExtensionInfo(name, candidate.source, False, error=error)
        hooks = tuple(sorted(h.name for h in callers))
        return ExtensionInfo(name, candidate.source, True, hooks)

    def extensions(self) -> list[ExtensionInfo]:
        """Loaded extensions in call order, then those not loaded."""
        loaded = [self.info[n] for n in self.order]
        return loaded + sorted((i for i in self.info.values() if not i.loaded), key=lambda i: i.name)

    def call(self, hook: str, *, firstresult: bool = False, expect: type | tuple[type, ...] | None = None,
             check: Callable[[Any], str | None] | None = None, **kwargs: Any) -> HookOutcome:
        """Call `hook` on each extension in order, each isolated and time-limited; an answer that is not an
        instance of `expect`, or in which `check` finds a problem (its answer: a short code), counts as a failure
        ("bad_answer:<type or problem>"), and with `firstresult` the next extension answers instead."""
        outcome = HookOutcome()
        for impl in self._ordered(hook):
            args = [kwargs[name] for name in impl.argnames]
            if self._pool.hung(impl.plugin_name) >= MAX_HUNG_CALLS:
                outcome.failures.append(HookFailure(impl.plugin_name, hook, "hung"))
                logger.warning("extension %s: %s not called: %d of its calls are still running past their time limit",
                               impl.plugin_name, hook, MAX_HUNG_CALLS)
                continue
            try:
                started = time.perf_counter()
                answer = self._pool.call(impl.function, *args, timeout_s=self.timeout_s, owner=impl.plugin_name)
                outcome.elapsed_ms[impl.plugin_name] = round((time.perf_counter() - started) * 1000, 3)
            except CallTimedOut:
                outcome.failures.append(HookFailure(impl.plugin_name, hook, "timeout"))
                logger.warning("extension %s: %s timed out after %s s", impl.plugin_name, hook, self.timeout_s)
                continue
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit too: a plugin calling sys.exit() must not end the request
                outcome.failures.append(HookFailure(impl.plugin_name, hook, type(exc).__name__))
                logger.warning("extension %s: %s raised %s", impl.plugin_name, hook, type(exc).__name__)
                continue
            if answer is not None and expect is not None and not isinstance(answer, expect):
                outcome.failures.append(HookFailure(impl.plugin_name, hook, f"bad_answer:{type(answer).__name__}"))
                continue
            problem = check(answer) if answer is not None and check is not None else None
            if problem is not None:
                outcome.failures.append(HookFailure(impl.plugin_name, hook, f"bad_answer:{problem}"))
                logger.warning("extension %s: %s answered %s", impl.plugin_name, hook, problem)
                continue
            if answer is not None:
                outcome.results.append((impl.plugin_name, answer))
                if firstresult:
                    break
        return outcome

    def _ordered(self, hook: str) -> list[Any]:
        caller = getattr(self.pm.hook, hook)
        position = {name: i for i, name in enumerate(self.order)}
        impls = [i for i in caller.get_hookimpls() if not (i.hookwrapper or i.wrapper)]
        return sorted(impls, key=lambda i: (0 if i.tryfirst else 2 if i.trylast else 1,
                                            position.get(i.plugin_name, len(position))))


def _candidates(extra: dict[str, Any]) -> list[_Candidate]:
    found = [_Candidate(name, "builtin", lambda name=name: importlib.import_module(f"node.modules.{name}"))
             for name in BUILTIN_MODULES]
    for point in entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        distribution = point.dist.name if point.dist is not None else "?"
        found.append(_Candidate(point.name, f"entry point {distribution}", point.load))
    found.extend(_Candidate(name, "embedded", lambda plugin=plugin: plugin) for name, plugin in extra.items())
    return found


_managers: weakref.WeakKeyDictionary[Any, ExtensionManager] = weakref.WeakKeyDictionary()
_managers_lock = threading.Lock()


def extensions_for(node: Any) -> ExtensionManager:
    """The node's extension manager, loaded once per NodeContext from its settings."""
    with _managers_lock:  # API threads may ask at once; plugins are imported once
        manager = _managers.get(node)
        if manager is None:
            settings = node.settings
            manager = ExtensionManager(enabled=settings.extensions_enabled, disabled=settings.extensions_disabled,
                                       timeout_s=settings.extension_timeout_s)
            _managers[node] = manager
        return manager


def check_extension_names(node: Any) -> None:
    """Refuse (ConfigError) settings naming an extension that is neither built in nor installed, and a plugin
    installed under a name another extension has.

    Checked when the node starts: `extensions_enabled = ["credit_platfrom"]` served no application routes at all,
    a misspelt name in `extensions_disabled` left running the built-in the bank meant to replace, and a plugin
    named like a built-in (or like another plugin) was silently never loaded, its rules never applied.
    """
    manager = extensions_for(node)
    problems = []
    if manager.unknown:
        problems.append(f"extensions_enabled / extensions_disabled name {', '.join(map(repr, manager.unknown))}: no "
                        f"built-in module or installed plugin has that name (see `alliance extensions list`)")
    if manager.duplicates:
        problems.append(f"extension name taken twice: {', '.join(manager.duplicates)}: rename the plugin's entry "
                        f"point")
    if problems:
        raise ConfigError("; ".join(problems))


class ExtensionNotRunning(AllianceError):
    code = "extension_not_running"
    http_status = 404  # as the API answers a disabled module's routes: they are not mounted


def require_extension(settings: Settings, name: str) -> None:
    """Refuse (ExtensionNotRunning) a command of an extension this node's settings leave out.

    The API mounts only the routes of the extensions that run; a command of the same module ran whatever the
    settings said, so a module the bank had switched off (`extensions_disabled = ["marketing"]`, replaced by its
    own) still screened prospect lists and wrote query-log entries from the CLI. Read from the settings alone: the
    command exists, so its extension loaded in this process.
    """
    if name in settings.extensions_disabled:
        setting = "extensions_disabled names it"
    elif settings.extensions_enabled is not None and name not in settings.extensions_enabled:
        setting = "extensions_enabled does not name it"
    else:
        return
    raise ExtensionNotRunning(f"the {name} extension does not run on this node ({setting}): its commands are off; "
                              "see `alliance extensions list`")


def use_extensions(node: Any, manager: ExtensionManager) -> None:
    """Give the node a manager built by the caller (tests, embedding) instead of one from its settings."""
    _managers[node] = manager
