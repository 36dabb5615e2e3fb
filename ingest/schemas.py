"""Pydantic models of the relay request and the endpoint's responses, for the OpenAPI document.

The handler reads the body itself (size cap while reading, extraction rules FastAPI cannot express), so
these models document the wire format; ``ingest.extract`` is what enforces it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class CiMetrics(BaseModel):
    queue_time: float | None = Field(None, description="seconds, dispatch -> in_progress; in_progress only")
    execution_time: float | None = Field(None, description="seconds, in_progress -> completed; stored from "
                                                           "whichever callback carries it")


class Trusted(BaseModel):
    """Written by the relay; the only identity the service relies on."""

    verified_repo: str = Field(description="the downstream repository (owner/name), proven by the relay")
    downstream_repo_level: Literal["L1", "L2", "L3", "L4"] | None = None
    ci_metrics: CiMetrics | None = None


class TestResults(BaseModel):
    passed: int | None = None
    failed: int | None = None
    skipped: int | None = None
    total: int | None = Field(None, description="usually absent: then passed + failed + skipped")


class Workflow(BaseModel):
    schema_version: str | int | None = None
    status: Literal["in_progress", "completed"]
    conclusion: str | None = Field(None, description="read only from completed callbacks")
    name: str
    url: str | None = None
    job_name: str
    check_run_id: str | int
    run_id: str | int | None = None
    run_attempt: str | int | None = Field(None, description="coerced to an integer >= 1; invalid -> 1")
    started_at: str | None = Field(None, description="ISO-8601 UTC")
    completed_at: str | None = Field(None, description="ISO-8601 UTC")
    test_results: TestResults | None = None
    artifact_url: str | None = None


class CallbackPayload(BaseModel):
    event_type: str = Field(
        "pull_request", max_length=64,
        description="the GitHub event the relay dispatched on (pull_request, push, …) or a self-reported nightly / "
                    "periodic; any printable name is stored as given. A result is a PR result when payload carries "
                    "a pull_request, a trunk result otherwise")
    delivery_id: str = Field(description="the upstream webhook delivery id (nightly/periodic: the commit SHA)")
    payload: dict[str, Any] = Field(description="the upstream webhook payload; only a few fields are read")
    workflow: Workflow


class Untrusted(BaseModel):
    callback_payload: CallbackPayload


class RelayPayload(BaseModel):
    """One relay callback: a job started (in_progress) or ended (completed)."""

    trusted: Trusted
    untrusted: Untrusted


class Accepted(BaseModel):
    """Stored (status is the record's status), or "stale": older than what is stored, nothing changed."""

    model_config = ConfigDict(populate_by_name=True)

    ok: Literal[True] = True
    status: Literal["in_progress", "completed", "stale"]
    dynamo_key: str = Field(alias="dynamoKey", description="the job record's key")


class Refused(BaseModel):
    """Every 4xx and 5xx: which field and why (4xx, final), or a generic message (500, retry)."""

    ok: Literal[False] = False
    error: str


def request_body_schema() -> dict[str, Any]:
    """``RelayPayload``'s JSON schema with its ``$defs`` inlined (OpenAPI resolves ``$ref`` from the root)."""
    schema = RelayPayload.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return inline(schema)
