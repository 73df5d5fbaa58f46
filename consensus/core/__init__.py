"""fedledger consensus/core package."""
