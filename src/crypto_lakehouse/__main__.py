"""Allow `python -m crypto_lakehouse ...`."""

from crypto_lakehouse.cli import main

main()
