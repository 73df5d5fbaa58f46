"""fedledger ledger package."""
