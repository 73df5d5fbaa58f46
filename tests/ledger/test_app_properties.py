"""Properties of block execution: cross-process determinism, conservation of tokens, proofs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.codec import decode_record
from ledger.schema import DELEGATION_PREFIX, UNBONDING_PREFIX, Account, Delegation, UnbondingEntry
from ledger.state import verify_query
from ledger.testing import ChainBuilder
from tests.ledger.chain_hashes import main as chain_hashes_main
from tests.ledger.chaingen import chain_testnet, commit_for, next_block

ROOT = Path(__file__).resolve().parents[2]


def _run_hashes(seed: int, n: int, hashseed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    out = subprocess.run(
        [sys.executable, "-m", "tests.ledger.chain_hashes", str(seed), str(n)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


def test_app_hash_identical_in_two_processes(capsys: object) -> None:
    a = _run_hashes(11, 12, "1")
    b = _run_hashes(11, 12, "2")
    assert a == b
    assert len(a.splitlines()) == 12
    chain_hashes_main(11, 12)  # and in this process too
    assert capsys.readouterr().out == a  # type: ignore[attr-defined]


def _supply(app: object) -> int:
    total = 0
    for _, v in app.items(b"acc/"):  # type: ignore[attr-defined]
        total += decode_record(v, Account).balance
    for _, v in app.items(DELEGATION_PREFIX):  # type: ignore[attr-defined]
        total += decode_record(v, Delegation).amount
    for _, v in app.items(UNBONDING_PREFIX):  # type: ignore[attr-defined]
        total += decode_record(v, UnbondingEntry).amount
    return total


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), blocks=st.integers(1, 6))
def test_random_chains_conserve_tokens_and_prove_every_key(seed: int, blocks: int) -> None:
    net = chain_testnet()
    cb = ChainBuilder(net)
    supply = _supply(cb.state.app)
    for _ in range(blocks):
        block = next_block(seed, cb.state, cb.last_commit, net)
        cb.add(block, commit_for(cb.state, block, net.validator_keys))
        assert _supply(cb.state.app) == supply  # no slashing here, so nothing is burned
        # the validator set is the non-jailed stake
        assert cb.state.next_validators.total_power == sum(
            decode_record(v, Delegation).amount for _, v in cb.state.app.items(DELEGATION_PREFIX)
        )
    st_ = cb.state
    for key, value in list(st_.app.items())[::3]:
        q = cb.app.query(st_, key)
        assert q.value == value and verify_query(st_.app_hash, q)
        assert not verify_query(b"\x00" * 32, q)
