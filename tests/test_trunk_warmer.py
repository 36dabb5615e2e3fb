"""A trunk result warms the trunk-failing cache in the background: the next PR render is a cache hit."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from oot_hud.app import create_app
from oot_hud.settings import Settings
from sql.pr_results import fetch_pr_rows, trunk_failing_cache
from tests.conftest import relay_payload

TOKEN = "relay-token"


async def test_a_trunk_result_warms_the_cache_before_any_pr_render(engine_dir: Path) -> None:
    settings = Settings(data_dir=engine_dir, clickhouse_database=f"t_{uuid.uuid4().hex[:12]}", relay_tokens=TOKEN)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
                for name in ("04_pr_other_job_failure", "11_push_trunk_failure"):
                    response = await http.post("/api/oot/results", json=relay_payload(name),
                                               headers={"X-OOT-Relay-Token": TOKEN})
                    assert response.status_code == 200, response.text
            await services.settled()  # inserted and announced
            assert services.trunk_warmer is not None
            await services.trunk_warmer.idle()
            assert services.trunk_warmer.refreshed == 1  # the PR result alone does not refresh anything
            cache = trunk_failing_cache(services.warehouse)
            misses = cache.misses
            rows = fetch_pr_rows(services.warehouse, "pytorch/pytorch", 170001)
            assert cache.misses == misses and cache.hits >= 1  # the render found the set ready
            job = next(r for r in rows if r["job_name"] == "test-distributed")
            assert job["also_failing_on_trunk"] == 1
        finally:
            await services.settled()
            services.warehouse.command(f"DROP DATABASE IF EXISTS {services.warehouse.database}")
