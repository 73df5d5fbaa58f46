"""fedledger fl package."""
