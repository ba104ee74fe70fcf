"""Allow `python -m crypto_lakehouse ...`."""

from crypto_lakehouse.cli.app import main

main()
