"""The relay's allowlist (pytorch/pytorch ``.github/allowlist.yml``): a frozen model and a strict parser.

Format (the relay's, read from its parser and tests)::

    L1:
      - org/repo                     # a bare repo
    L2:
      - org/other: alice, bob        # a repo with on-calls, comma-separated
    L3:
      npu:                           # L3 is grouped by device: runs when the PR has ciflow/crcr/npu
        org/npu-repo: [alice]
    L4:
      - org/gate: [carol]            # a list of on-calls works too

Stricter than the relay on purpose: a typo must not silently drop a gating backend, so an unknown top-level
key, a malformed repo or login, a YAML key repeated in one mapping and a repo listed twice (any case) are
errors naming the place. The source keeps the last good copy when a new one fails here.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import yaml

LEVELS = ("L1", "L2", "L3", "L4")
GATING_LEVEL = "L4"
DEVICE_LEVEL = "L3"
DEFAULT_PATH = ".github/allowlist.yml"
DEFAULT_LABEL_PREFIX = "ciflow/crcr/"
MAX_BYTES = 1024 * 1024  # the real file is a few hundred bytes; anything near this is not an allowlist

_REPO = re.compile(r"[A-Za-z0-9_.-]{1,39}/[A-Za-z0-9_.-]{1,100}")
# A GitHub login, or an org/team-slug (a team mention).
_ONCALL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:/[A-Za-z0-9_.-]{1,100})?")
# A device becomes part of a label (GitHub labels: up to 50 characters) and of the PR comment.
_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}")


class AllowlistError(ValueError):
    """The text is not a valid allowlist; the message says where and why."""


@dataclasses.dataclass(frozen=True, slots=True)
class AllowlistEntry:
    """One registered backend. ``repo`` is as written in the file; lookups ignore case (GitHub does)."""

    repo: str
    level: str  # "L1" .. "L4"
    oncalls: tuple[str, ...] = ()  # GitHub logins (or org/team), trusted: upstream controls the file
    device: str | None = None  # L3 only: the suffix of the label that makes it run

    def label(self, prefix: str = DEFAULT_LABEL_PREFIX) -> str | None:
        """The PR label that runs this L3 backend (``ciflow/crcr/<device>``); None for other levels."""
        return None if self.device is None else prefix + self.device


@dataclasses.dataclass(frozen=True)
class Allowlist:
    """Registered backends by level. Build with ``parse_allowlist`` (or ``Allowlist.of``)."""

    entries: tuple[AllowlistEntry, ...]
    _by_repo: Mapping[str, AllowlistEntry] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def of(cls, entries: Iterable[AllowlistEntry]) -> Allowlist:
        entries = tuple(entries)
        return cls(entries, MappingProxyType({entry.repo.lower(): entry for entry in entries}))

    def entry(self, repo: str) -> AllowlistEntry | None:
        return self._by_repo.get(repo.lower())

    def level_of(self, repo: str) -> str | None:
        found = self.entry(repo)
        return None if found is None else found.level

    def oncalls_of(self, repo: str) -> tuple[str, ...]:
        found = self.entry(repo)
        return () if found is None else found.oncalls

    def gates(self, repo: str) -> bool:
        """Whether ``repo`` is registered at the gating level (L4)."""
        return self.level_of(repo) == GATING_LEVEL

    def at_level(self, level: str) -> tuple[AllowlistEntry, ...]:
        return tuple(entry for entry in self.entries if entry.level == level)

    def devices(self) -> dict[str, tuple[AllowlistEntry, ...]]:
        """L3 backends by device, in file order."""
        grouped: dict[str, list[AllowlistEntry]] = {}
        for entry in self.entries:
            if entry.device is not None:
                grouped.setdefault(entry.device, []).append(entry)
        return {device: tuple(found) for device, found in grouped.items()}

    def __len__(self) -> int:
        return len(self.entries)


# ------------------------------------------------------------------------------------------------ parser


class _StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; here a repeated key is an error."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        if not isinstance(key, str | int | float | bool):
            continue  # an unhashable key: construct_mapping below refuses it
        if key in seen:
            raise AllowlistError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice in one mapping")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_allowlist(text: str | bytes) -> Allowlist:
    """Parse and validate the YAML text; raises ``AllowlistError`` saying where and why."""
    if len(text) > MAX_BYTES:
        raise AllowlistError(f"the file is larger than {MAX_BYTES:,} bytes")
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except AllowlistError:
        raise
    except yaml.YAMLError as exc:
        raise AllowlistError(f"not valid YAML: {_yaml_reason(exc)}") from None
    if not isinstance(raw, dict):
        what = "empty" if raw is None else f"a {_kind(raw)}"
        raise AllowlistError(f"the document must be a mapping with keys {', '.join(LEVELS)}, got {what}")
    unknown = [key for key in raw if key not in LEVELS]
    if unknown:
        raise AllowlistError(f"unknown top-level key {unknown[0]!r} (expected {', '.join(LEVELS)})")
    entries: list[AllowlistEntry] = []
    seen: dict[str, str] = {}  # lower-case repo -> where it was listed first
    for level in LEVELS:
        value = raw.get(level)
        if value is None:
            continue
        found = _devices(value) if level == DEVICE_LEVEL else _list_level(level, value)
        for entry, where in found:
            first = seen.setdefault(entry.repo.lower(), where)
            if first != where:
                raise AllowlistError(f"{where}: repo {entry.repo!r} is already listed at {first}")
            entries.append(entry)
    return Allowlist.of(entries)


def _list_level(level: str, value: Any) -> list[tuple[AllowlistEntry, str]]:
    if not isinstance(value, list):
        raise AllowlistError(f"{level} must be a list of repos, got a {_kind(value)}")
    out = []
    for index, item in enumerate(value):
        where = f"{level}[{index}]"
        if isinstance(item, str):
            out.append((AllowlistEntry(_repo(item, where), level), where))
        elif isinstance(item, dict):
            if len(item) != 1:
                raise AllowlistError(f"{where} must map exactly one repo to its on-calls, got {len(item)} keys")
            repo, oncalls = next(iter(item.items()))
            out.append((AllowlistEntry(_repo(repo, where), level, _oncalls(oncalls, where)), where))
        else:
            raise AllowlistError(f"{where} must be 'org/repo' or 'org/repo: on-calls', got a {_kind(item)}")
    return out


def _devices(value: Any) -> list[tuple[AllowlistEntry, str]]:
    if not isinstance(value, dict):
        raise AllowlistError(f"L3 must map devices to repos (L3: {{npu: {{org/repo: [alice]}}}}), got a {_kind(value)}")
    out = []
    for device, repos in value.items():
        name = str(device).strip() if isinstance(device, str | int) and not isinstance(device, bool) else ""
        if not _DEVICE.fullmatch(name):
            raise AllowlistError(f"L3 device {device!r} must be 1-40 letters, digits, '_', '.', '+' or '-'")
        if not isinstance(repos, dict):
            raise AllowlistError(f"L3.{name} must map repos to on-calls, got a {_kind(repos)}")
        for repo, oncalls in repos.items():
            where = f"L3.{name}.{repo}"
            out.append((AllowlistEntry(_repo(repo, where), DEVICE_LEVEL, _oncalls(oncalls, where), name), where))
    return out


def _repo(value: Any, where: str) -> str:
    text = value.strip().strip("/") if isinstance(value, str) else ""
    if not _REPO.fullmatch(text):
        raise AllowlistError(f"{where}: {value!r} is not an owner/repo name")
    return text


def _oncalls(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        names = [item.strip() for item in value]
    else:
        raise AllowlistError(f"{where}: on-calls must be 'alice, bob' or [alice, bob], got a {_kind(value)}")
    logins = tuple(name.removeprefix("@") for name in names if name)
    for login in logins:
        if not _ONCALL.fullmatch(login):
            raise AllowlistError(f"{where}: on-call {login!r} is not a GitHub login or org/team")
    return logins


# YAML's words for what a value is (bool before number: a bool is an int in Python).
_KINDS: tuple[tuple[type | types.UnionType, str], ...] = (
    (bool, "boolean"), (int | float, "number"), (str, "string"), (list, "list"), (dict, "mapping"))


def _kind(value: Any) -> str:
    return next((name for kind, name in _KINDS if isinstance(value, kind)), type(value).__name__)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)
