"""Settings for the whole lakehouse, read from `LAKEHOUSE_*` environment variables and flags."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ARCHIVE_URL = "https://data.binance.vision"
DEFAULT_LISTING_URL = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"


class Tuning(BaseModel):
    """Internal tuning of the ingest engine; the defaults are measured, rarely worth changing.

    Set from the environment as `LAKEHOUSE_TUNING__<NAME>` (for example
    `LAKEHOUSE_TUNING__PARSE_BATCH_MB=32`).
    """

    model_config = ConfigDict(frozen=True)

    retry_backoff_seconds: float = Field(default=0.5, ge=0, description="First back-off wait")
    retry_max_wait_seconds: float = Field(default=60.0, ge=0, description="Longest back-off wait")
    # 16 MB, not more: larger chunks are mmap-ed and unmapped by malloc on every chunk, and
    # the page faults doubled the system time (512 MB file: 1.4-1.7 s at 16 MB, 1.8-2.1 s at 64).
    parse_batch_mb: int = Field(default=16, ge=1, description="CSV MB parsed per batch")
    stream_parse: bool = Field(
        default=True, description="Parse large tick files while they download"
    )
    parse_batch_files: int = Field(
        default=64, ge=1, description="Small files parsed together in one pass"
    )
    # Beside the downloads, a parse only pays when they leave the cores idle (`cpu_load`).
    overlap_parse: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Parse small files while others download: auto = only while the "
        "downloads leave the cores mostly idle (a remote archive, not a fast mirror)",
    )
    # A commit costs a table open and a predicate scan whatever its size, so files wait for
    # one: hundreds of daily files land in one commit, a monthly tick file in its own.
    commit_batch_files: int = Field(default=1024, ge=1, description="Most files per Delta commit")
    commit_batch_mb: int = Field(default=512, ge=1, description="CSV MB that trigger a commit")
    commit_interval_seconds: float = Field(
        default=30.0, gt=0, description="Longest a parsed file waits for its batch's commit"
    )
    auto_compact: bool = Field(default=True, description="Compact partitions of small files")
    auto_compact_max_small_files: int = Field(default=16, ge=2)
    rest_weight_limit_per_minute: int = Field(default=0, ge=0, description="0 = from exchangeInfo")
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=30.0, gt=0)


class Settings(BaseSettings):
    """What a user sets: the lake root, endpoints, limits; defaults serve a laptop user.

    Every field reads `LAKEHOUSE_<NAME>` from the environment; internal knobs live in
    `tuning` (`LAKEHOUSE_TUNING__<NAME>`). Settings are read once, by the entry point (the
    CLI, or the caller of the Python API), and passed in: no constructor reads them.
    """

    model_config = SettingsConfigDict(
        env_prefix="LAKEHOUSE_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    root: str = Field(default="./lake", description="Lake root: a path or s3://bucket/prefix")
    binance_archive_url: str = DEFAULT_ARCHIVE_URL
    binance_listing_url: str = DEFAULT_LISTING_URL
    binance_spot_api_url: str = "https://api.binance.com"
    binance_um_api_url: str = "https://fapi.binance.com"
    binance_cm_api_url: str = "https://dapi.binance.com"
    binance_spot_ws_url: str = "wss://stream.binance.com:9443"
    binance_um_ws_url: str = "wss://fstream.binance.com"
    binance_cm_ws_url: str = "wss://dstream.binance.com"

    # Archive round trips, not bandwidth, bound hundreds of small files from a distant CDN:
    # at 20 ms a request, 8 in flight take 1.35x the time of 16 and 32 take 0.62x
    # (bench/results/paired-concurrency.json); 16 stays polite to a shared public CDN.
    download_concurrency: int = Field(default=16, ge=1, le=64, description="Parallel downloads")
    http_timeout_seconds: float = Field(default=60.0, gt=0, description="Per-request timeout")
    http_retries: int = Field(default=5, ge=0, description="Retries of a failed request")
    memory_budget_mb: int = Field(default=2048, ge=64, description="Peak RSS budget for ingest")
    workers: int = Field(default=0, ge=0, description="Parser processes; 0 means one per core")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    tuning: Tuning = Field(default_factory=Tuning)


def load_settings(**overrides: object) -> Settings:
    """Return settings from the environment with explicit overrides (flags) applied on top.

    Args:
        **overrides: `Settings` fields, or `Tuning` fields by their own name (routed into
            `tuning` and merged over the environment's). `None` means "flag not given".

    Raises:
        pydantic.ValidationError: a value is out of range or of the wrong type.
    """
    values = {key: value for key, value in overrides.items() if value is not None}
    tuning = {key: values.pop(key) for key in list(values) if key in Tuning.model_fields}
    if tuning:
        values["tuning"] = {**dict(values.get("tuning", {})), **tuning}  # type: ignore[call-overload]
    return Settings(**values)  # type: ignore[arg-type]


def with_tuning(settings: Settings, **changes: object) -> Settings:
    """Return a copy of `settings` with some `Tuning` fields changed (validated)."""
    tuning = Tuning.model_validate({**settings.tuning.model_dump(), **changes})
    return settings.model_copy(update={"tuning": tuning})
