"""Which keys the job-results table may hold: 8-byte digests of every stored key, so a new key needs no read.

False positives only cost a read; there are no false negatives as long as the embedded store is the
table's only writer (it adds every key it writes, and loads the digests of the existing ones at start).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sql.records import JOB_RESULTS_TABLE
from sql.warehouse import Warehouse

# The same digest computed by ClickHouse (first 8 bytes of MD5, little-endian) and by Python below.
_DIGESTS_SQL = (f"SELECT groupUniqArray(reinterpretAsUInt64(substring(MD5(key), 1, 8))) AS digests "  # noqa: S608
                f"FROM {JOB_RESULTS_TABLE}")


def key_digest(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode(), usedforsecurity=False).digest()[:8], "little")


class KnownKeys:
    """A set of key digests (about 60 bytes a key in Python: 6 MB for 100,000 results)."""

    def __init__(self, digests: Iterable[int] = ()) -> None:
        self._digests = set(digests)

    @classmethod
    def load(cls, warehouse: Warehouse) -> KnownKeys:
        rows = warehouse.query(_DIGESTS_SQL)
        return cls(rows[0]["digests"] if rows else ())

    def may_exist(self, key: str) -> bool:
        return key_digest(key) in self._digests

    def add(self, keys: Iterable[str]) -> None:
        self._digests.update(key_digest(key) for key in keys)

    def __len__(self) -> int:
        return len(self._digests)
