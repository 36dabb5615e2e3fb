"""All configuration in one typed object, read from ``OOT_HUD_*`` environment variables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MAX_BODY_BYTES = 2 * 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OOT_HUD_", extra="ignore")

    data_dir: Path = Field(Path(".oot-hud"), description="embedded warehouse directory")
    relay_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="accepted relay tokens, comma-separated (several during rotation)")
    clickhouse_url: SecretStr | None = Field(None, description="http(s)://user:pass@host:port/db; unset = embedded")
    clickhouse_database: str = Field("oot_hud", description="database when the URL names none, or embedded")
    dynamo_table: str | None = Field(None, description="DynamoDB table; set = write results through DynamoDB")
    replicator_routes: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="replicator: dynamo_table=clickhouse_table pairs, comma-separated; "
                                          "default: OOT_HUD_DYNAMO_TABLE=oot_job_results")
    replicator_insert_attempts: int = Field(4, ge=1, description="replicator: tries per warehouse insert")
    replicator_insert_timeout_s: float = Field(30.0, gt=0, description="replicator: bound on one insert try")

    rate_limit_per_minute: int = Field(600, ge=1, description="accepted results per downstream repo a minute")
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024)
    commit_window_ms: float = Field(0.0, ge=0, description="embedded store: how long a write group gathers "
                                                           "before its first commit (0: classic group commit)")
    flush_interval_ms: float = Field(500.0, ge=0, description="embedded store: least time between two "
                                                             "warehouse inserts of journaled results")
    silence_hours: float = Field(6.0, gt=0, description="in_progress for longer than this shows 'no report'")

    github_app_id: str | None = None
    github_private_key: SecretStr | None = Field(None, description="PEM text or a path to a PEM file")
    github_webhook_secret: SecretStr | None = None
    github_api_url: str = "https://api.github.com"
    github_app_slug: str | None = Field(None, description="the App's slug; its comments come from <slug>[bot]")
    bot_debounce_seconds: float = Field(3.0, ge=0)
    bot_pace_seconds: float = Field(1.0, ge=0, description="gap between content-creating calls per installation")
    bot_sweep_seconds: float = Field(60.0, gt=0)
    # Several instances (DynamoDB): see docs/bot.md "Several instances" for how these bound each other.
    dynamo_state_table: str | None = Field(None, description="the bot's shared state table; default "
                                                             "<OOT_HUD_DYNAMO_TABLE>-state")
    bot_lease_seconds: float = Field(30.0, gt=0, description="per-PR write lease (a dead instance's PRs wait "
                                                            "this long)")
    bot_poll_seconds: float = Field(1.0, gt=0, description="how often each instance reads the shared marks")
    bot_clock_skew_seconds: float = Field(2.0, ge=0, description="largest wall-clock difference between "
                                                                "instances the leases allow for")
    bot_github_timeout_seconds: float = Field(15.0, gt=0, description="longest one GitHub call may take")

    public_url: str = Field("http://127.0.0.1:8000", description="base URL of the pages, for links")

    allowlist: str | None = Field(None, description="the relay's allowlist: a path, an http(s) URL, or "
                                                    "github:owner/repo[:path] (read through the App)")
    allowlist_refresh_seconds: float = Field(300.0, gt=0, description="how often the allowlist is read again")
    gate_max_pending_hours: float = Field(24.0, ge=0, description="a gating (L4) backend pending for longer no "
                                                                  "longer holds the check (0 = it always does)")
    notify_oncalls: bool = Field(False, description="mention the allowlist's on-calls of a failing L4/L3 backend, "
                                                    "once per backend and PR head (docs/bot.md)")
    canary_backends: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="the relay's canaries: downstream repos whose jobs are meant to fail, be "
                                          "cancelled or time out (comma-separated; the summary's pipeline health)")
    l3_label_prefix: str = Field("ciflow/crcr/", min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_./:+-]+$",
                                 description="the PR label that runs an L3 backend is this + its device")

    @model_validator(mode="after")
    def _lease_outlasts_a_write(self) -> Settings:
        bound = self.bot_github_timeout_seconds + self.bot_clock_skew_seconds
        if self.bot_lease_seconds <= bound:
            raise ValueError(f"OOT_HUD_BOT_LEASE_SECONDS ({self.bot_lease_seconds:g}) must exceed the GitHub "
                             f"timeout plus the clock skew ({bound:g})")
        return self

    def state_table(self) -> str | None:
        """The bot's DynamoDB state table (None on the embedded path)."""
        if self.dynamo_state_table:
            return self.dynamo_state_table
        from ingest.dynamo_schema import state_table_name

        return state_table_name(self.dynamo_table) if self.dynamo_table else None

    @field_validator("relay_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("canary_backends", mode="before")
    @classmethod
    def _split_canaries(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            bad = [name for name in value if not re.fullmatch(r"[\w.-]{1,100}/[\w.-]{1,100}", str(name), re.ASCII)]
            if bad:
                raise ValueError(f"canary {str(bad[0])[:100]!r} is not an owner/repo name")
        return value

    @field_validator("replicator_routes", mode="before")
    @classmethod
    def _parse_routes(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        routes: dict[str, str] = {}
        for pair in filter(None, (part.strip() for part in value.split(","))):
            source, _, target = (side.strip() for side in pair.partition("="))
            if not re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", source) or not re.fullmatch(r"[A-Za-z_]\w*", target):
                raise ValueError(f"route {pair[:80]!r} is not dynamo_table=clickhouse_table")
            routes[source] = target
        return routes

    def replication_routes(self) -> dict[str, str]:
        """DynamoDB table -> warehouse table for the replicator (the results table by default)."""
        if self.replicator_routes:
            return dict(self.replicator_routes)
        return {self.dynamo_table: "oot_job_results"} if self.dynamo_table else {}

    @property
    def embedded(self) -> bool:
        return self.clickhouse_url is None

    @property
    def github_enabled(self) -> bool:
        return bool(self.github_app_id and self.github_private_key)

    def private_key_pem(self) -> str | None:
        if self.github_private_key is None:
            return None
        value = self.github_private_key.get_secret_value()
        if "-----BEGIN" in value:
            return value
        return Path(value).expanduser().read_text()
