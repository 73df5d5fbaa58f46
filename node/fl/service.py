"""Wiring of the FL services into a node: verifier hooks on consensus, trainer, torch threads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from node.fl.verifier import VerifierService

if TYPE_CHECKING:
    from ledger.block import Block
    from ledger.chainstate import ChainState
    from node.daemon import Node


class FLServices:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.verifier = VerifierService(node)
        self.trainer: Any = None
        driver = node.consensus.driver
        driver.prepare_pol = self.prepare
        driver.process_proposal = self.process
        node.add_service("verifier", self.verifier.run)
        if node.cfg.trainer.enabled:
            from node.fl.trainer import TrainerService

            if node.cfg.trainer.threads > 0:
                import torch

                torch.set_num_threads(node.cfg.trainer.threads)
            self.trainer = TrainerService(node)
            node.add_service("trainer", self.trainer.run)
        self.keyholder: Any = None
        if node.cfg.keyholder.enabled:
            from node.fl.keyholder import KeyHolderService

            self.keyholder = KeyHolderService(node)
            node.add_service("keyholder", self.keyholder.run)
        from node.fl.keyholder import register_keyholder_rpc

        register_keyholder_rpc(node.rpc, node)

    def is_validator(self, state: ChainState) -> bool:
        return state.validators.get(self.node.validator_key.address) is not None

    async def prepare(self, state: ChainState) -> Any:
        return await self.verifier.prepare(state)

    async def process(self, state: ChainState, block: Block) -> str | None:
        # A non-validator does not vote; a block that +2/3 precommitted is its truth.
        if not self.is_validator(state):
            return None
        return await self.verifier.process(state, block)
