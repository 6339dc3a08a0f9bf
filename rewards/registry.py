"""Find reward functions by the name a config writes.

A spec is one of:

- a registered name: ``"think_format"``;
- a Python file and a function in it: ``"path/to/my_rewards.py:my_reward"``
  (relative paths are taken from the current directory);
- an importable module and a function in it: ``"my_pkg.rewards:my_reward"``.

Built-in rewards are registered lazily, as ``"module:function"`` strings that
are imported on first :meth:`RewardRegistry.get`. That keeps ``import rewards``
light (no sympy, no sandbox) and lets a module such as ``rewards.math`` be
named here before it exists.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Callable, Union

RewardFn = Callable[..., list]

BUILTINS: dict[str, str] = {
    "think_format": "rewards.format:think_format_reward",
    "tag_count": "rewards.format:tag_count_reward",
    "repetition": "rewards.format:repetition_penalty_reward",
    "language_consistency": "rewards.format:language_consistency_reward",
    "math_accuracy": "rewards.math:accuracy_reward",
    "code_unit_tests": "rewards.code:unit_test_reward",
}


class UnknownRewardError(KeyError):
    """A name that is neither registered nor a ``file.py:function`` / ``module:function`` spec."""

    def __str__(self) -> str:
        # KeyError would print the repr of its message, quotes escaped.
        return str(self.args[0])


class RewardRegistry:
    """Maps names to reward functions, or to ``"module:function"`` strings
    standing for functions not imported yet."""

    def __init__(self, lazy: dict[str, str] | None = None) -> None:
        self._entries: dict[str, Union[RewardFn, str]] = dict(lazy or {})
        self._files: dict[str, ModuleType] = {}

    def register(self, name: str) -> Callable[[RewardFn], RewardFn]:
        """Decorator: register the function under ``name``.

        A taken name is an error, so two modules cannot silently shadow each
        other. The one exception is a lazy entry pointing at this very
        function: importing ``rewards.math`` may itself run
        ``@register("math_accuracy")``, which just fulfils the lazy entry.
        """
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(f"reward name must be a non-empty string without ':', got {name!r}")

        def add(fn: RewardFn) -> RewardFn:
            if not callable(fn):
                raise TypeError(f"reward {name!r} must be callable, got {type(fn).__name__}")
            existing = self._entries.get(name)
            if existing is not None and existing is not fn and existing != _origin(fn):
                raise ValueError(f"reward {name!r} is already registered (as {_describe(existing)})")
            self._entries[name] = fn
            return fn

        return add

    def get(self, spec: str) -> RewardFn:
        """Return the reward function for a name, ``file.py:function`` or ``module:function``."""
        if not isinstance(spec, str):
            raise TypeError(f"a reward spec must be a string, got {type(spec).__name__}: {spec!r}")
        if spec in self._entries:
            entry = self._entries[spec]
            if isinstance(entry, str):
                entry = self._entries[spec] = _load_from_module(entry)
            return entry
        if ":" in spec:
            location, _, attr = spec.rpartition(":")
            if location.endswith(".py"):
                return _pick(self._load_file(location), attr, spec)
            return _load_from_module(spec)
        raise UnknownRewardError(
            f"unknown reward {spec!r}; registered rewards: {', '.join(self.available())}. "
            f"To load your own, write 'path/to/file.py:function' or 'package.module:function'"
        )

    def available(self) -> list[str]:
        """Names of the registered rewards, lazy ones included."""
        return sorted(self._entries)

    def _load_file(self, path: str) -> ModuleType:
        full = os.path.abspath(path)
        if full in self._files:
            return self._files[full]
        if not os.path.isfile(full):
            raise FileNotFoundError(f"reward file {path!r} not found (looked at {full})")
        digest = hashlib.sha1(full.encode()).hexdigest()[:10]
        module_name = f"_reward_file_{os.path.splitext(os.path.basename(full))[0]}_{digest}"
        module_spec = importlib.util.spec_from_file_location(module_name, full)
        module = importlib.util.module_from_spec(module_spec)
        # The module must be in sys.modules while it runs (dataclasses and
        # typing look themselves up there) but not afterwards: a function
        # whose module is absent from sys.modules is pickled by value, so it
        # can be shipped to a remote worker that has no such module.
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        finally:
            sys.modules.pop(module_name, None)
        self._files[full] = module
        return module


def _load_from_module(spec: str) -> RewardFn:
    module_name, _, attr = spec.rpartition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        # Keep the original type and missing name (it may be a dependency of
        # the module, not the module itself) but say which reward needed it.
        raise type(err)(f"cannot import reward {spec!r}: {err}", name=err.name) from err
    return _pick(module, attr, spec)


def _pick(module: ModuleType, attr: str, spec: str) -> RewardFn:
    if not hasattr(module, attr):
        public = sorted(
            name for name, value in vars(module).items()
            if callable(value) and not name.startswith("_") and not isinstance(value, type)
        )
        raise AttributeError(
            f"no function {attr!r} in {spec.rpartition(':')[0]!r}; "
            f"its functions are: {', '.join(public) or '(none)'}"
        )
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{spec!r} is not callable: it is a {type(fn).__name__}")
    return fn


def _origin(fn: RewardFn) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', '?')}"


def _describe(entry: Union[RewardFn, str]) -> str:
    return entry if isinstance(entry, str) else _origin(entry)


_default = RewardRegistry(BUILTINS)
register = _default.register
get = _default.get
available = _default.available
