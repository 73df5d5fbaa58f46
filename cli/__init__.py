"""fedledger cli package."""
