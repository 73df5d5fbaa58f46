"""Wiring of the FL services into a node: verifier hooks on consensus, trainer, torch threads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from node.fl.verifier import VerifierService

if TYPE_CHECKING:
    from ledger.block import Block
    from ledger.chainstate import ChainState
    from node.daemon import Node


# Test-only byzantine proposer behaviour (consensus.byzantine_mode; never on a real node):
# propose round-closing blocks without their FL section, or with a global model that is
# not the aggregate. Honest validators must prevote nil on both.
BYZANTINE_FL_MODES = ("fl_omit_section", "fl_wrong_model")


def _wrong_model_section(state: ChainState, section: Any) -> Any:
    import dataclasses

    from ledger.fl import get_task

    results = []
    for r in section.results:
        task = get_task(state, r.task_id)
        # the current global model: a real, fetchable model - just not this round's aggregate
        wrong = task.global_model_cid if task is not None else r.new_model_cid[::-1]
        if wrong == r.new_model_cid:
            wrong = bytes(reversed(wrong))
        results.append(dataclasses.replace(r, new_model_cid=wrong))
    return dataclasses.replace(section, results=tuple(results))


class FLServices:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.verifier = VerifierService(node)
        self.trainer: Any = None
        driver = node.consensus.driver
        driver.prepare_pol = self.prepare
        driver.process_proposal = self.process
        node.add_service("verifier", self.verifier.run, restart=True)
        # torch's thread count is per process: a node that trains uses [trainer] threads
        threads = node.cfg.trainer.threads if node.cfg.trainer.enabled \
            else node.cfg.verifier.threads
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        if node.cfg.trainer.enabled:
            from node.fl.trainer import TrainerService

            self.trainer = TrainerService(node)
            node.add_service("trainer", self.trainer.run, restart=True)
        self.keyholder: Any = None
        if node.cfg.keyholder.enabled:
            from node.fl.keyholder import KeyHolderService

            self.keyholder = KeyHolderService(node)
            node.add_service("keyholder", self.keyholder.run, restart=True)
        from node.fl.keyholder import register_keyholder_rpc

        register_keyholder_rpc(node.rpc, node)

    def is_validator(self, state: ChainState) -> bool:
        return state.validators.get(self.node.validator_key.address) is not None

    async def prepare(self, state: ChainState) -> Any:
        mode = self.node.cfg.consensus.byzantine_mode
        if mode == "fl_omit_section":
            return None  # test-only: propose as if no round were due
        section = await self.verifier.prepare(state)
        if section is not None and mode in BYZANTINE_FL_MODES:
            return _wrong_model_section(state, section)
        return section

    async def process(self, state: ChainState, block: Block) -> str | None:
        # A non-validator does not vote; a block that +2/3 precommitted is its truth.
        if not self.is_validator(state):
            return None
        return await self.verifier.process(state, block)
