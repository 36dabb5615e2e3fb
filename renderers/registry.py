"""What the pages know about backends beyond their results: the upstream allowlist and the relay's canaries.

``Registry`` is built by the composition root (``oot_hud.pages``) from the allowlist in use and the settings;
``Registration`` is what a page shows about one backend: the level the allowlist registers it at against the
level the relay reported, its on-calls (plain text: upstream's text, never a mention or a link) and, for an
L3 backend, its device and the label that runs it. With no allowlist and no canary, nothing here changes a
page.
"""

from __future__ import annotations

import dataclasses

from policy.allowlist import DEFAULT_LABEL_PREFIX, Allowlist, AllowlistEntry


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    repo: str
    registered: bool  # listed in the allowlist
    level: str | None  # the allowlist's level (None: not listed)
    reported_level: str | None  # the relay's level on the newest record (None: nothing reported)
    oncalls: tuple[str, ...] = ()
    device: str | None = None
    label: str | None = None  # the PR label that runs an L3 backend: <prefix><device>

    @property
    def mismatch(self) -> bool:
        """The relay reported a level other than the allowlist's (both are shown)."""
        return bool(self.registered and self.reported_level and self.reported_level != self.level)


@dataclasses.dataclass(frozen=True, slots=True)
class Registry:
    allowlist: Allowlist | None = None  # None: none configured, or none readable yet
    label_prefix: str = DEFAULT_LABEL_PREFIX
    canaries: tuple[str, ...] = ()  # the relay's canaries (OOT_HUD_CANARY_BACKENDS), as the relay names them

    def is_canary(self, repo: str) -> bool:
        return repo.lower() in {canary.lower() for canary in self.canaries}

    def entries(self) -> tuple[AllowlistEntry, ...]:
        """Registered backends, canaries left out (they have their own line)."""
        if self.allowlist is None:
            return ()
        return tuple(entry for entry in self.allowlist.entries if not self.is_canary(entry.repo))

    def registration(self, repo: str, reported_level: str | None) -> Registration | None:
        """What the allowlist says about ``repo``; None when no allowlist is in use."""
        if self.allowlist is None:
            return None
        entry = self.allowlist.entry(repo)
        if entry is None:
            return Registration(repo, False, None, reported_level or None)
        return Registration(repo, True, entry.level, reported_level or None, entry.oncalls, entry.device,
                            entry.label(self.label_prefix))


NO_REGISTRY = Registry()
