"""fedledger node package."""
