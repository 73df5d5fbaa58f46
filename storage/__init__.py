"""fedledger storage package."""
