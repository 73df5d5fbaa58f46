"""fedledger consensus package."""
