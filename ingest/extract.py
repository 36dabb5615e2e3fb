"""Relay payload (parsed JSON) -> ``JobRecord``, exactly as the relay contract says; pure, no I/O."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sql.records import STATUS_COMPLETED, STATUSES, JobRecord, parse_time

DEFAULT_UPSTREAM_REPO = "pytorch/pytorch"
LEVELS = ("L1", "L2", "L3", "L4")
TRUNK_EVENTS = ("push", "nightly", "periodic")
SELF_REPORTED_EVENTS = ("nightly", "periodic")

# Length limits for untrusted strings (characters). Generous for real values, small enough that a row
# stays small and a page or comment quoting one stays readable. Longer is a 400, never a silent cut.
MAX_ID = 200          # delivery_id, check_run_id, run_id, schema_version
MAX_NAME = 300        # workflow name, job name (matrix legs carry their parameters)
MAX_URL = 2048
MAX_REF = 255
MAX_CONCLUSION = 64
MAX_EVENT_TYPE = 64   # GitHub's event names are under 40 characters
MAX_REPO = 140        # GitHub: owner 39 + "/" + name 100
MAX_TIMESTAMP = 40
MAX_RUN_ATTEMPT = 2**32 - 1  # the warehouse column is UInt32
MAX_COUNT = 2**63 - 1
MAX_SECONDS = 10 * 365 * 24 * 3600.0  # a duration longer than ten years is not a measurement

_REPO_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_SHA_RE = re.compile(r"[0-9a-fA-F]{7,64}")

# Field-path prefixes, so every message names the field exactly as it sits in the body.
_C = "untrusted.callback_payload."
_W = _C + "workflow."
_P = _C + "payload"


class ExtractionError(ValueError):
    """The payload cannot become a record; the message names the field and says why (a 400 for the relay)."""


def extract(body: Any, *, received_at: datetime) -> JobRecord:
    """Build the job record of one relay callback. ``received_at`` is the server's clock, stored apart."""
    root = _object(body, "body")
    trusted = _object(root.get("trusted"), "trusted")
    untrusted = _object(root.get("untrusted"), "untrusted")
    callback = _object(untrusted.get("callback_payload"), "untrusted.callback_payload")
    workflow = _object(callback.get("workflow"), "untrusted.callback_payload.workflow")

    downstream_repo = _repo(trusted.get("verified_repo"), "trusted.verified_repo", required=True)
    level = _optional_string(trusted.get("downstream_repo_level"), "trusted.downstream_repo_level", 8)
    if level is not None and level not in LEVELS:
        raise ExtractionError(f"trusted.downstream_repo_level must be one of {', '.join(LEVELS)}, got {level!r}")
    metrics = trusted.get("ci_metrics")
    metrics = {} if metrics is None else _object(metrics, "trusted.ci_metrics")

    status = _required_string(workflow.get("status"), _W + "status", 32)
    if status not in STATUSES:
        raise ExtractionError(f"{_W}status must be one of {', '.join(STATUSES)}, got {status[:32]!r}")
    completed = status == STATUS_COMPLETED

    event_type = _event_type(callback.get("event_type"))
    delivery_id = _required_id(callback.get("delivery_id"), _C + "delivery_id")
    workflow_name = _required_string(workflow.get("name"), _W + "name", MAX_NAME)
    job_name = _required_string(workflow.get("job_name"), _W + "job_name", MAX_NAME)
    check_run_id = _required_id(workflow.get("check_run_id"), _W + "check_run_id")

    upstream_repo, pr_number, head_sha, ref = _upstream(callback.get("payload"), event_type)
    passed, failed, skipped, total = _test_counts(workflow.get("test_results"), _W + "test_results")

    return JobRecord(
        key=f"{downstream_repo}/{delivery_id}/{workflow_name}/{job_name}/{check_run_id}",
        downstream_repo=downstream_repo,
        downstream_level=level,
        event_type=event_type,
        delivery_id=delivery_id,
        upstream_repo=upstream_repo,
        pr_number=pr_number,
        head_sha=head_sha,
        ref=ref,
        workflow_name=workflow_name,
        job_name=job_name,
        check_run_id=check_run_id,
        run_id=_optional_id(workflow.get("run_id"), _W + "run_id"),
        run_attempt=coerce_run_attempt(workflow.get("run_attempt")),
        workflow_url=_optional_string(workflow.get("url"), _W + "url", MAX_URL),
        artifact_url=_optional_string(workflow.get("artifact_url"), _W + "artifact_url", MAX_URL),
        schema_version=_optional_id(workflow.get("schema_version"), _W + "schema_version"),
        status=status,
        # Conclusion, test counts and completion time describe a finished job: an
        # in_progress callback carrying them (a buggy downstream) must not pre-empt the real ones.
        conclusion=_optional_string(workflow.get("conclusion"), _W + "conclusion", MAX_CONCLUSION)
        if completed else None,
        started_at=_optional_time(workflow.get("started_at"), _W + "started_at"),
        completed_at=_optional_time(workflow.get("completed_at"), _W + "completed_at") if completed else None,
        queue_time_s=_optional_seconds(metrics.get("queue_time"), "trusted.ci_metrics.queue_time"),
        # The relay measures both; whichever callback carries one is stored (an in_progress one too).
        execution_time_s=_optional_seconds(metrics.get("execution_time"), "trusted.ci_metrics.execution_time"),
        tests_passed=passed if completed else None,
        tests_failed=failed if completed else None,
        tests_skipped=skipped if completed else None,
        tests_total=total if completed else None,
        received_at=received_at,
    )


def coerce_run_attempt(value: Any) -> int:
    """The contract's rule: an integer >= 1 from a string or a number; missing or invalid -> 1."""
    if isinstance(value, bool):
        return 1
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 10:
            return 1
        value = int(text)
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return 1
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= MAX_RUN_ATTEMPT:
        return 1
    return value


def _event_type(value: Any) -> str:
    """Any well-formed event name, stored as given (the relay forwards whatever GitHub event it dispatched on)."""
    text = _optional_string(value, _C + "event_type", MAX_EVENT_TYPE)
    if text is None:
        return "pull_request"
    if not text.strip() or not text.isprintable():
        raise ExtractionError(f"{_C}event_type must be printable text, got {text!r}")
    return text


def _upstream(payload: Any, event_type: str) -> tuple[str, int, str, str | None]:
    """(upstream_repo, pr_number, head_sha, ref) from the upstream webhook payload: a PR result when the
    payload carries a pull request (or the event says it must), a trunk result otherwise."""
    payload = {} if payload is None else _object(payload, _P)
    repository = payload.get("repository")
    repository = {} if repository is None else _object(repository, _P + ".repository")
    upstream_repo = _repo(repository.get("full_name"), _P + ".repository.full_name", required=False)
    ref = None
    if event_type == "pull_request" or payload.get("pull_request") is not None:
        pull = _object(payload.get("pull_request"), _P + ".pull_request")
        pr_number = _pr_number(pull.get("number"), _P + ".pull_request.number")
        head = pull.get("head")
        head = {} if head is None else _object(head, _P + ".pull_request.head")
        head_sha = _sha(head.get("sha"), _P + ".pull_request.head.sha")
    elif event_type == "push":
        pr_number = 0
        head_sha = _sha(payload.get("after"), _P + ".after")
        ref = _optional_string(payload.get("ref"), _P + ".ref", MAX_REF)
    elif event_type in SELF_REPORTED_EVENTS:
        pr_number = 0
        head_sha = _sha(payload.get("head_sha"), _P + ".head_sha")
    else:
        # Another event, as trunk: its commit where GitHub's payloads of that shape carry one.
        pr_number = 0
        field = "head_sha" if payload.get("head_sha") is not None else "after"
        head_sha = _sha(payload.get(field), f"{_P}.{field}")
        given_ref = payload.get("ref")
        ref = _optional_string(given_ref, _P + ".ref", MAX_REF) if isinstance(given_ref, str) else None
    return upstream_repo or DEFAULT_UPSTREAM_REPO, pr_number, head_sha, ref


def _test_counts(value: Any, field: str) -> tuple[int | None, int | None, int | None, int | None]:
    """(passed, failed, skipped, total); total is the given number, else the sum of the given counts."""
    if value is None:
        return None, None, None, None
    counts = _object(value, field)
    passed, failed, skipped = (_optional_count(counts.get(name), f"{field}.{name}")
                               for name in ("passed", "failed", "skipped"))
    total_value = counts.get("total")
    total: int | None
    if isinstance(total_value, int | float) and not isinstance(total_value, bool):
        total = _optional_count(total_value, f"{field}.total")
    else:
        given = [count for count in (passed, failed, skipped) if count is not None]
        total = sum(given) if given else None
    return passed, failed, skipped, total


# ---- field readers: each names the field and says why it is refused ----

def _object(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        what = "missing" if value is None else f"a JSON {_json_type(value)}"
        raise ExtractionError(f"{field} must be a JSON object, got {what}")
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _required_string(value: Any, field: str, limit: int) -> str:
    if value is None:
        raise ExtractionError(f"{field} is required")
    text = _optional_string(value, field, limit)
    if not text:
        raise ExtractionError(f"{field} must not be empty")
    return text


def _optional_string(value: Any, field: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ExtractionError(f"{field} must be a string, got a JSON {_json_type(value)}")
    if len(value) > limit:
        raise ExtractionError(f"{field} is longer than {limit} characters ({len(value)})")
    return value


def _optional_id(value: Any, field: str) -> str | None:
    """An identifier: a string, or an integer (seen in the wild) stored as its decimal string."""
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return _optional_string(value, field, MAX_ID)


def _required_id(value: Any, field: str) -> str:
    if value is None:
        raise ExtractionError(f"{field} is required")
    text = _optional_id(value, field)
    if not text:
        raise ExtractionError(f"{field} must not be empty")
    return text


def _repo(value: Any, field: str, *, required: bool) -> str | None:
    text = _required_string(value, field, MAX_REPO) if required else _optional_string(value, field, MAX_REPO)
    if text is not None and not _REPO_RE.fullmatch(text):
        raise ExtractionError(f"{field} must look like owner/name")
    return text


def _sha(value: Any, field: str) -> str:
    text = _optional_string(value, field, 64)
    if text is None:
        return ""
    if not _SHA_RE.fullmatch(text):
        raise ExtractionError(f"{field} must be a hexadecimal commit SHA")
    return text


def _pr_number(value: Any, field: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        value = int(value)
    if value is None:
        raise ExtractionError(f"{field} is required for pull_request events")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise ExtractionError(f"{field} must be a positive integer")
    return value


def _optional_count(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ExtractionError(f"{field} must be a non-negative integer")
    return value


def _optional_seconds(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExtractionError(f"{field} must be a number of seconds or null, got a JSON {_json_type(value)}")
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
        raise ExtractionError(f"{field} must be between 0 and {MAX_SECONDS:.0f} seconds")
    return seconds


def _optional_time(value: Any, field: str) -> datetime | None:
    text = _optional_string(value, field, MAX_TIMESTAMP)
    if text is None:
        return None
    try:
        parsed = parse_time(text)
    except (ValueError, OverflowError):
        raise ExtractionError(f"{field} must be an ISO-8601 timestamp, got {text!r}") from None
    if not 1970 <= parsed.year <= 2299:  # DateTime64(3) covers 1900..2299; earlier is a bug upstream
        raise ExtractionError(f"{field} is out of range ({text!r})")
    return parsed
