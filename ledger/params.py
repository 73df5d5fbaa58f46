"""Consensus and staking parameters (the genesis ``consensus_params``), kept in app state."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.codec import record

PPM = 1_000_000


@record(60)
@dataclass(frozen=True)
class BlockParams:
    max_bytes: int = 4 * 1024 * 1024  # whole encoded block
    max_txs: int = 5000
    max_gas: int = -1  # no gas metering; kept for CometBFT genesis compatibility

    def __post_init__(self) -> None:
        if not 1024 <= self.max_bytes <= 100 * 1024 * 1024:
            raise ValueError("block.max_bytes must be in 1024..104857600")
        if self.max_txs < 1:
            raise ValueError("block.max_txs must be >= 1")
        if self.max_gas < -1:
            raise ValueError("block.max_gas must be >= -1")


@record(61)
@dataclass(frozen=True)
class EvidenceParams:
    max_age_num_blocks: int = 100_000
    max_bytes: int = 1024 * 1024  # evidence bytes per block

    def __post_init__(self) -> None:
        if self.max_age_num_blocks < 1:
            raise ValueError("evidence.max_age_num_blocks must be >= 1")
        if self.max_bytes < 0:
            raise ValueError("evidence.max_bytes must be >= 0")


@record(62)
@dataclass(frozen=True)
class ValidatorParams:
    pub_key_types: tuple[str, ...] = ("ed25519",)

    def __post_init__(self) -> None:
        if tuple(self.pub_key_types) != ("ed25519",):
            raise ValueError('validator.pub_key_types must be ["ed25519"]')


@record(63)
@dataclass(frozen=True)
class StakingParams:
    double_sign_slash_ppm: int = 50_000  # 5 %
    unbonding_blocks: int = 2
    jail_blocks: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.double_sign_slash_ppm <= PPM:
            raise ValueError(f"staking.double_sign_slash_ppm must be in 0..{PPM}")
        if self.unbonding_blocks < 0:
            raise ValueError("staking.unbonding_blocks must be >= 0")
        if self.jail_blocks < 0:
            raise ValueError("staking.jail_blocks must be >= 0")


@record(64)
@dataclass(frozen=True)
class ConsensusParams:
    block: BlockParams = field(default_factory=BlockParams)
    evidence: EvidenceParams = field(default_factory=EvidenceParams)
    validator: ValidatorParams = field(default_factory=ValidatorParams)
    staking: StakingParams = field(default_factory=StakingParams)
