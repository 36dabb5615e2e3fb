"""The embedded store's merge rules: a callback's present fields over the stored item (pure)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ingest.stores.base import Outcome
from sql.records import FIRST_ONLY_FIELDS, STATUS_COMPLETED, JobRecord


@dataclasses.dataclass(frozen=True, slots=True)
class Merged:
    item: dict[str, Any]  # the item after this write (the stored one, unchanged, when stale)
    outcome: Outcome

    @property
    def version(self) -> int:
        return int(self.item.get("version") or 0)

    @property
    def status(self) -> str:
        return str(self.item.get("status", ""))


def merge(stored: Mapping[str, Any] | None, record: JobRecord) -> Merged:
    """What DynamoDB's conditional UpdateItem does, for the embedded store.

    Present fields overwrite; first-only fields keep their stored value; ``version`` goes up by one per
    accepted write; an in_progress callback for a completed record changes nothing ("stale").
    """
    if stored is not None and stored.get("status") == STATUS_COMPLETED and record.status != STATUS_COMPLETED:
        return Merged(dict(stored), Outcome.STALE)
    item: dict[str, Any] = dict(stored) if stored is not None else {}
    for name, value in record.present_fields().items():
        if name in FIRST_ONLY_FIELDS and item.get(name) is not None:
            continue
        item[name] = value
    item["version"] = int(item.get("version") or 0) + 1
    return Merged(item, Outcome.STORED)
