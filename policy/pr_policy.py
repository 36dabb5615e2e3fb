"""A deployment's PR rules in one value: the allowlist in use, the merge gate's settings, the L3 label prefix.

The composition root builds it for every render (the allowlist changes while running); the bot and the PR
page pass the same one, so the page's dry run shows what the bot posts.
"""

from __future__ import annotations

import dataclasses

from policy.allowlist import DEFAULT_LABEL_PREFIX, Allowlist
from policy.gate import DEFAULT_GATE, GateConfig


@dataclasses.dataclass(frozen=True, slots=True)
class PrPolicy:
    allowlist: Allowlist | None = None  # None: none configured, or none readable yet
    gate: GateConfig = DEFAULT_GATE
    label_prefix: str = DEFAULT_LABEL_PREFIX  # ciflow/crcr/<device> runs an L3 backend
    notify_oncalls: bool = False  # mention the allowlist's on-calls of failing L4/L3 backends (docs/bot.md)


DEFAULT_POLICY = PrPolicy()
