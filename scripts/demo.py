"""`make demo`: serve the bundled real archive files locally, ingest them all, show what landed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.servers.archive_server import ArchiveServer  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "binance-vision"
LAKE = REPO / "demo-lake"
INGESTS = [
    ["spot", "klines", "--symbols", "BTCUSDT", "--interval", "1m",
     "--start", "2020-01-01", "--end", "2020-01-03"],
    ["um", "fundingRate", "--symbols", "BTCUSDT", "--start", "2026-04-01", "--end", "2026-04-30"],
    ["cm", "aggTrades", "--symbols", "BTCUSD_PERP", "--start", "2026-05-08", "--end", "2026-05-08"],
]  # fmt: skip
SCORES = """
SELECT "table", symbol, count(*) AS days, min(score) AS worst, max(score) AS best
FROM gold.quality GROUP BY ALL ORDER BY 1
"""
LANDED = """
SELECT 'silver.spot_klines' AS "table", symbol, min(open_time)::DATE AS first_day,
       max(open_time)::DATE AS last_day, count(*) AS rows FROM silver.spot_klines
GROUP BY symbol, open_time::DATE
UNION ALL
SELECT 'silver.um_funding_rate', symbol, min(calc_time)::DATE, max(calc_time)::DATE, count(*)
FROM silver.um_funding_rate GROUP BY symbol
UNION ALL
SELECT 'silver.cm_agg_trades', symbol, min(transact_time)::DATE, max(transact_time)::DATE,
       count(*) FROM silver.cm_agg_trades GROUP BY symbol
ORDER BY 1, 2, 3
"""


def lakehouse(*args: str, env: dict[str, str]) -> int:
    """Run the CLI as a user would and return its exit code."""
    print(f"\n$ lakehouse {' '.join(args)}", flush=True)
    return subprocess.call([sys.executable, "-m", "crypto_lakehouse", *args], env=env)


def main() -> int:
    """Run the demo and return a shell exit code."""
    shutil.rmtree(LAKE, ignore_errors=True)
    with ArchiveServer(FIXTURES) as archive:
        env = dict(os.environ)
        env.update(
            LAKEHOUSE_BINANCE_ARCHIVE_URL=archive.archive_url,
            LAKEHOUSE_BINANCE_LISTING_URL=archive.listing_url,
            LAKEHOUSE_ROOT=str(LAKE),
            LAKEHOUSE_LOG_LEVEL="WARNING",
        )
        print(f"archive stand-in serving {FIXTURES} at {archive.archive_url}", flush=True)
        failures = sum(lakehouse("ingest", *args, env=env) != 0 for args in INGESTS)
        print("\nsecond run: nothing is downloaded again", flush=True)
        failures += lakehouse("ingest", *INGESTS[0], env=env) != 0
        lakehouse("status", env=env)
        print("\nquality of every symbol-day (0-100), computed after each ingest:", flush=True)
        failures += lakehouse("sql", SCORES, env=env) != 0
        print("\nwhat landed:", flush=True)
        failures += lakehouse("sql", LANDED, env=env) != 0
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
