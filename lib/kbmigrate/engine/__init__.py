"""The change engine: the plan and its parameters, applying a change (verify first, one
transaction with its ledger row), the batched backfill, revert, the ledger, one run at a time."""
