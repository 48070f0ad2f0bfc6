"""One module per command; ``kvreceipts.cli`` composes them into the ``kvreceipts`` app."""
