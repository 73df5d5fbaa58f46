"""Exceptions of the ledger: invalid blocks, commits and evidence, store corruption."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every ledger error (never raised directly)."""


class InvalidBlockError(LedgerError):
    """A block that must not be committed (ProcessProposal answers: prevote nil)."""


class InvalidCommitError(InvalidBlockError):
    """A commit that does not prove +2/3 of the voting power signed the block."""


class InvalidEvidenceError(InvalidBlockError):
    """Evidence that is malformed, unverifiable, expired or already committed."""


class GenesisError(LedgerError):
    """A genesis document that is malformed; the message names the bad field."""


class StoreError(LedgerError):
    """A chain store operation that cannot proceed (wrong chain, wrong height, closed)."""


class StoreCorruptError(StoreError):
    """The chain store's records contradict each other; the message names the key."""
