"""Settings for the whole lakehouse, read from `LAKEHOUSE_*` environment variables and flags."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ARCHIVE_URL = "https://data.binance.vision"
DEFAULT_LISTING_URL = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"


class Settings(BaseSettings):
    """Every knob of the lakehouse; defaults serve a laptop user talking to the real Binance."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_", extra="ignore")

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
    # against the stand-in at 20 ms a request, 300 daily files took 1.88 s with 8, 1.03 s with
    # 16 and 0.72 s with 32; with no latency the concurrency made no difference.
    download_concurrency: int = Field(default=16, ge=1, le=64)
    http_timeout_seconds: float = Field(default=60.0, gt=0)
    http_client: Literal["curl", "aiohttp"] = Field(
        default="curl",
        description="Client for small archive GETs (zips, CHECKSUMs, listings): curl = "
        "libcurl in a thread beside the event loop (less CPU per GET); aiohttp = on the loop",
    )
    http_retries: int = Field(default=5, ge=0)
    retry_backoff_seconds: float = Field(default=0.5, ge=0)
    retry_max_wait_seconds: float = Field(default=60.0, ge=0)

    memory_budget_mb: int = Field(default=2048, ge=64, description="Peak RSS budget for ingest")
    # 16 MB, not more: larger chunks are mmap-ed and unmapped by malloc on every chunk, and
    # the page faults doubled the system time (512 MB file: 1.4-1.7 s at 16 MB, 1.8-2.1 s at 64).
    parse_batch_mb: int = Field(default=16, ge=1, description="CSV MB parsed per batch")
    workers: int = Field(default=0, ge=0, description="Parser processes; 0 means one per core")
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

    metadata_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite in the lake")
    log_level: str = "INFO"


def load_settings(**overrides: object) -> Settings:
    """Return settings from the environment with explicit overrides (flags) applied on top."""
    values = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**values)  # type: ignore[arg-type]
