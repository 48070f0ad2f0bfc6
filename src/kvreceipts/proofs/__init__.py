"""Standards-based proof machinery, knowing nothing of receipts: RFC 9162 Merkle trees
(:mod:`.merkle`), C2SP signed notes with Go's sumdb/note keys (:mod:`.note`), C2SP
tlog-checkpoints (:mod:`.checkpoint`), kvreceipts' proof bundles (:mod:`.bundle`), and key
files read for a command (:mod:`.keyfiles`).

Import the submodules directly; this package imports nothing, so that start-up stays fast.
"""
