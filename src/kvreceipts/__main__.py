"""``python -m kvreceipts`` runs the command line."""

from kvreceipts.cli import main

main()
