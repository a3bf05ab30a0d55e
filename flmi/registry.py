"""One kind of registry for every replaceable part: strategies, tasks, networks, data, runtimes.

A :class:`Registry` maps config names to parts. flmi registers its own parts
with :meth:`Registry.register`, exactly as a user's script may; an installed
plug-in package declares its parts as Python entry points of the registry's
group (``flmi.strategies``, ``flmi.tasks``, ``flmi.models``,
``flmi.data_sources``, ``flmi.runtimes``), each entry point named as the
config names it and pointing at the part itself::

    [project.entry-points."flmi.strategies"]
    fedmedian = "my_package.strategies:FEDMEDIAN"

Entry points are listed once, on the registry's first use, without importing
anything; an entry point is imported only when its name is looked up. Every
name remembers its :class:`Origin` (flmi itself, or the distribution and
version that provided it), which the run directory records so that a resume
or a prediction can name a missing plug-in package.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from flmi.core.errors import ConfigError, FlmiError
from flmi.core.suggest import one_line, suggest

T = TypeVar("T")

#: The distribution that provides the built-in parts.
BUILTIN = "flmi"


class PluginError(FlmiError):
    """A plug-in cannot be used: it fails to import, clashes with another name, or is missing."""


@dataclass(frozen=True)
class Origin:
    """Where a registered name came from.

    Parameters
    ----------
    distribution
        The installed distribution (``"flmi"`` for built-in parts; ``""`` for a
        part registered by a script that is no installed package).
    version
        That distribution's version (``""`` when unknown).
    entry_point
        ``"GROUP: NAME = module:attribute"`` for a part found through an entry
        point; ``""`` for one registered by a call.
    """

    distribution: str
    version: str = ""
    entry_point: str = ""

    @property
    def builtin(self) -> bool:
        """Whether flmi itself provides the part."""
        return self.distribution == BUILTIN and not self.entry_point

    def describe(self) -> str:
        """``flmi (built-in)``, ``my-plugin 1.2`` or ``a call to register()``, for messages."""
        if self.builtin:
            return "flmi (built-in)"
        if not self.distribution:
            return "a call to register() outside any installed package"
        label = f"{self.distribution} {self.version}".strip()
        return f"{label} (entry point {self.entry_point})" if self.entry_point else label

    def to_json(self) -> dict[str, str]:
        """The origin as JSON-ready strings."""
        return {
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
        }


def _flmi_version() -> str:
    try:
        return importlib.metadata.version(BUILTIN)
    except importlib.metadata.PackageNotFoundError:
        return ""


BUILTIN_ORIGIN = Origin(distribution=BUILTIN, version=_flmi_version())


@dataclass
class _Pending:
    """An entry point listed but not imported yet."""

    entry: importlib.metadata.EntryPoint
    origin: Origin


class Registry(Mapping[str, T], Generic[T]):
    """Named parts of one kind, filled by flmi, by scripts and by installed plug-ins.

    A registry reads like a mapping from name to part (``registry[name]``,
    ``name in registry``, ``sorted(registry)``); :meth:`lookup` is the lookup
    whose error names the config field, lists the known names and suggests
    installing a plug-in.

    Parameters
    ----------
    kind
        What the parts are, for messages (``"strategy"``, ``"network"``).
    group
        The entry-point group plug-ins declare their parts in.
    field
        The config key whose value is looked up here (``"strategy.name"``).
    check
        Called on every part before it is registered; raises
        :class:`PluginError` if the object is not a part of this kind.
    """

    def __init__(
        self,
        *,
        kind: str,
        group: str,
        field: str,
        check: Callable[[str, object], None] | None = None,
    ) -> None:
        self.kind, self.group, self.field = kind, group, field
        self._check = check
        self._parts: dict[str, T] = {}
        self._origins: dict[str, Origin] = {}
        self._pending: dict[str, _Pending] | None = None
        self._lock = threading.RLock()

    # -- registration -------------------------------------------------------------------------

    def register(
        self, name: str, part: T, *, replace: bool = False, origin: Origin | None = None
    ) -> None:
        """Make ``part`` selectable as ``name``.

        Parameters
        ----------
        name
            The config name (for example ``[strategy] name``).
        part
            The part (what this registry holds).
        replace
            Replace an earlier registration of ``name`` instead of refusing it.
        origin
            Where the part comes from; by default, the installed distribution
            of the calling module (flmi itself for built-in parts).

        Raises
        ------
        PluginError
            ``name`` is already taken (and ``replace`` is false): the message
            names both origins.
        """
        if not name or not isinstance(name, str):
            raise PluginError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if self._check is not None:
            self._check(name, part)
        where = origin if origin is not None else _caller_origin()
        with self._lock:  # entry points are listed later, on first use, and checked then
            taken = self._origin_of_taken(name)
            if taken is not None and not replace:
                raise PluginError(
                    f"{self.kind} '{name}' is registered twice: by {taken.describe()} and by "
                    f"{where.describe()}; rename one, uninstall one of the packages, or pass "
                    "replace=True to register() on purpose"
                )
            if self._pending is not None:
                self._pending.pop(name, None)
            self._parts[name] = part
            self._origins[name] = where

    def unregister(self, name: str) -> None:
        """Forget ``name`` (for tests and interactive sessions); unknown names are ignored."""
        with self._lock:
            self._parts.pop(name, None)
            self._origins.pop(name, None)
            if self._pending is not None:
                self._pending.pop(name, None)

    # -- lookup -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every selectable name, sorted (plug-ins included, none imported)."""
        with self._lock:
            self._scan()
            assert self._pending is not None
            return sorted({*self._parts, *self._pending})

    def loaded(self) -> list[tuple[str, T]]:
        """The parts imported so far, in the order they were registered.

        Entry points not yet used are left out and stay unimported: a
        registry whose parts all take part in every run (the client
        algorithms a site asks each round) imports a plug-in only when a run
        names it.
        """
        with self._lock:
            return list(self._parts.items())

    def origin(self, name: str) -> Origin:
        """Where ``name`` came from (raises like :meth:`lookup` for an unknown name)."""
        with self._lock:
            self._scan()
            taken = self._origin_of_taken(name)
            if taken is None:
                raise self.unknown(name)
            return taken

    def lookup(self, name: str) -> T:
        """The part ``name`` selects, importing its plug-in on first use.

        Raises
        ------
        ConfigError
            No part of this kind has that name: the message names the config
            field and every known name, and suggests installing a plug-in.
        PluginError
            The plug-in providing ``name`` fails to import, or is not a part of this kind.
        """
        part = self.get(name)
        if part is None:
            raise self.unknown(name)
        return part

    def unknown(self, name: str) -> ConfigError:
        """The error for a name no part has: the nearest known name first, then all of them."""
        names = self.names()
        choices = suggest(name, names, f"choose one of {one_line(names)}")
        return ConfigError(
            f"{self.field}: unknown {self.kind} '{name}'; {choices}; or install the plug-in "
            f"package that provides it (entry-point group '{self.group}')"
        )

    def __getitem__(self, name: str) -> T:
        with self._lock:
            self._scan()
            if name not in self._parts:
                assert self._pending is not None
                pending = self._pending.get(name)
                if pending is None:
                    raise KeyError(name)
                self._load(name, pending)
            return self._parts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    # -- entry points -------------------------------------------------------------------------

    def _origin_of_taken(self, name: str) -> Origin | None:
        if name in self._origins:
            return self._origins[name]
        pending = self._pending.get(name) if self._pending is not None else None
        return pending.origin if pending is not None else None

    def _scan(self) -> None:
        """List the group's entry points once (nothing is imported)."""
        if self._pending is not None:
            return
        self._pending = {}
        for entry in sorted(
            importlib.metadata.entry_points(group=self.group), key=lambda e: (e.name, e.value)
        ):
            dist = entry.dist
            origin = Origin(
                distribution=dist.metadata["Name"] if dist is not None else "",
                version=dist.version if dist is not None else "",
                entry_point=f"{self.group}: {entry.name} = {entry.value}",
            )
            taken = self._origin_of_taken(entry.name)
            if taken is not None:
                if taken == origin:  # the same distribution seen twice on the path
                    continue
                raise PluginError(
                    f"{self.kind} '{entry.name}' is registered twice: by {taken.describe()} "
                    f"and by {origin.describe()}; uninstall one of the packages"
                )
            self._pending[entry.name] = _Pending(entry=entry, origin=origin)

    def _load(self, name: str, pending: _Pending) -> None:
        try:
            part = pending.entry.load()
        except Exception as exc:
            raise PluginError(
                f"{self.kind} '{name}': the plug-in {pending.origin.describe()} failed to "
                f"import: {type(exc).__name__}: {exc}; reinstall or fix that package"
            ) from exc
        if self._check is not None:
            self._check(name, part)
        assert self._pending is not None
        del self._pending[name]
        self._parts[name] = part
        self._origins[name] = pending.origin


def _caller_origin() -> Origin:
    """The installed distribution of the module that called :meth:`Registry.register`."""
    import sys

    frame = sys._getframe(2)
    module = str(frame.f_globals.get("__name__", ""))
    top = module.partition(".")[0]
    if top == BUILTIN:
        return BUILTIN_ORIGIN
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return Origin(distribution=dist, version=importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            continue
    return Origin(distribution="")


def instance_check(kind: str, cls: type[Any]) -> Callable[[str, object], None]:
    """A registry ``check`` that accepts instances of ``cls`` only."""

    def check(name: str, part: object) -> None:
        if not isinstance(part, cls):
            raise PluginError(
                f"{kind} '{name}' must be a {cls.__module__}.{cls.__qualname__}, got "
                f"{type(part).__name__}; make the entry point point at one"
            )

    return check


def callable_check(kind: str) -> Callable[[str, object], None]:
    """A registry ``check`` that accepts callables only (factories)."""

    def check(name: str, part: object) -> None:
        if not callable(part):
            raise PluginError(
                f"{kind} '{name}' must be callable (a factory), got {type(part).__name__}"
            )

    return check
