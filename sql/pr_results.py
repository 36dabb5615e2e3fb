"""Fetch one PR's rows for the PR view: runs the saved query ``oot_pr_results`` (the only I/O of the PR path)."""

from __future__ import annotations

from typing import Any

from sql.saved import load
from sql.warehouse import Warehouse

PR_RESULTS_QUERY = "oot_pr_results"


def fetch_pr_rows(warehouse: Warehouse, upstream_repo: str, pr_number: int) -> list[dict[str, Any]]:
    """Every record row of ``upstream_repo`` PR ``pr_number`` (all head SHAs) with the current head SHA and
    the "also failing on trunk" flag. Blocking: call it from a thread in async code.

    Raises ``sql.saved.QueryParamError`` for an invalid repo/number and ``WarehouseError`` when the
    warehouse fails. Feed the result to ``renderers.pr_view.build_pr_view``.
    """
    query = load(PR_RESULTS_QUERY)
    # Timezone-aware times straight from the driver: the view would otherwise attach UTC to every value.
    return warehouse.query_aware(query.sql, query.bind({"upstream_repo": upstream_repo, "pr": pr_number}))
