"""Properties of the FL contract: reward splits, and a stateful model of random task activity.

Invariants checked after every step of the state machine: tokens are conserved
except what slashing burns; no pool goes negative and each pool accounts for
every payment; nobody is paid twice for one round; a round closes once; a
jailed trainer never has a submission accepted.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ledger.chainstate import ChainState
from ledger.codec import decode_record
from ledger.fl import due_rounds, get_task, get_trainer, list_submissions, split_rewards
from ledger.fl.state import TASK_PREFIX, TRAINER_PREFIX, TaskState, TrainerState
from ledger.fl.testing import FLChain, codes, events, make_spec
from ledger.schema import (
    ACCOUNT_PREFIX,
    UNBONDING_PREFIX,
    VALIDATOR_PREFIX,
    Account,
    UnbondingEntry,
    ValidatorRecord,
)
from ledger.state import AppState
from ledger.tx import Tx

addresses = st.binary(min_size=20, max_size=20)


@given(
    budget=st.integers(0, 10**15),
    ppm=st.integers(0, 10**6),
    cap=st.integers(0, 10**12),
    signers=st.lists(addresses, max_size=5, unique=True),
    contribs=st.lists(st.tuples(addresses, st.integers(1, 1 << 22)), max_size=8),
)
def test_split_rewards_never_pays_more_than_the_budget(
    budget: int, ppm: int, cap: int, signers: list[bytes], contribs: list[tuple[bytes, int]]
) -> None:
    payouts = split_rewards(budget, ppm, cap, signers, contribs)

    total = sum(p.amount for p in payouts)
    v_part = budget * ppm // 10**6
    assert 0 <= total <= budget
    assert all(p.amount > 0 for p in payouts)
    validators = [p for p in payouts if p.role == "validator"]
    assert sum(p.amount for p in validators) == (v_part if signers else 0)
    if len(validators) > 1:  # equal shares, the first takes the remainder
        assert len({p.amount for p in validators[1:]}) == 1
        assert validators[0].amount - validators[1].amount < len(signers)
    assert all(p.amount <= cap for p in payouts if p.role == "trainer")


def total_supply(app: AppState) -> int:
    """Balances + staked + unbonding + FL escrow (task pools and trainer bonds)."""
    total = sum(decode_record(v, Account).balance for _, v in app.items(ACCOUNT_PREFIX))
    total += sum(decode_record(v, ValidatorRecord).tokens for _, v in app.items(VALIDATOR_PREFIX))
    total += sum(decode_record(v, UnbondingEntry).amount for _, v in app.items(UNBONDING_PREFIX))
    total += sum(decode_record(v, TaskState).pool_left for _, v in app.items(TASK_PREFIX))
    total += sum(decode_record(v, TrainerState).bond for _, v in app.items(TRAINER_PREFIX))
    return total


TRAINERS = st.sampled_from([3, 4, 5, 6, 7])
TASKS = st.sampled_from([1, 2])
VERDICT = st.sampled_from(["accept", "unproven", "proven"])


class ContractMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.c = FLChain.make(n_validators=4, n_accounts=8, balance=100_000)
        self.pending: list[Tx] = []
        self.burned = 0
        self.closed: set[tuple[int, int]] = set()
        self.paid: set[tuple[int, int, str, str]] = set()
        self.paid_out: Counter[int] = Counter()  # task -> rewards paid + refund
        self.supply0 = total_supply(self.c.state.app)
        plain = make_spec(rounds=6, round_blocks=3, slash_ppm=300_000, jail_after=2, pool=5_000)
        replay = make_spec(
            rounds=4,
            clients_per_round=2,
            min_participants=1,
            round_blocks=3,
            pol_policy="replay",
            pol_k=4,
            reveal_blocks=2,
            pool=3_001,
            trainer_reward_cap=400,
            validator_share_ppm=250_000,
        )
        self.pools = {1: plain.pool, 2: replay.pool}
        assert codes(self.c.advance([self.c.create(0, plain), self.c.create(1, replay)])) == [0, 0]
        joins = [self.c.join(i, t, 100 + 50 * i) for i in (3, 4, 5, 6) for t in (1, 2)]
        assert codes(self.c.advance(joins)) == [0] * len(joins)  # trainer 7 has to join itself

    @rule(i=TRAINERS, t=TASKS, bond=st.integers(100, 400))
    def join(self, i: int, t: int, bond: int) -> None:
        self.pending.append(self.c.join(i, t, bond))

    @rule(
        who=st.lists(TRAINERS, min_size=1, max_size=4, unique=True),
        t=TASKS,
        samples=st.integers(1, 500),
        ahead=st.sampled_from([0, 0, 0, 0, 1]),
    )
    def submit(self, who: list[int], t: int, samples: int, ahead: int) -> None:
        task = get_task(self.c.state, t)
        assert task is not None
        for i in who:
            self.pending.append(self.c.submit(i, t, task.round + ahead, samples=samples + i))

    @rule(i=TRAINERS, t=TASKS)
    def leave(self, i: int, t: int) -> None:
        self.pending.append(self.c.leave(i, t))

    @rule(data=st.data(), n=st.integers(1, 3))
    def blocks(self, data: st.DataObject, n: int) -> None:
        """Some trainers submit to each task, then ``n`` blocks go by."""
        for t in (1, 2):
            self.submit(data.draw(st.lists(TRAINERS, max_size=4, unique=True)), t, 100, 0)
        for _ in range(n):
            self.block(data)

    def block(self, data: st.DataObject) -> None:
        state = self.c.state
        task = get_task(state, 2)  # the replay task: some submitters reveal
        assert task is not None
        by_addr = {self.c.addr(i): i for i in range(8)}
        for trainer, sub in list_submissions(state, 2, task.round):
            if not sub.reveal_cid and data.draw(st.booleans()):
                self.pending.append(self.c.reveal(by_addr[trainer], 2, task.round))
        reject: dict[int, dict[bytes, tuple[str, bool]]] = {}
        for t, r in self._due(state):
            verdicts: dict[bytes, tuple[str, bool]] = {}
            for trainer, _ in list_submissions(state, t, r):
                v = data.draw(VERDICT)
                if v != "accept":
                    verdicts[trainer] = (
                        "pol_failed" if v == "proven" else "unavailable",
                        v == "proven",
                    )
            reject[t] = verdicts
        cb = self.c.advance(self.pending, reject=reject)
        self.pending = []

        closed_now = set()
        for e in events(cb, "fl.round_closed"):
            key = (int(e.attributes["task"]), int(e.attributes["round"]))
            assert key not in self.closed, f"round {key} closed twice"
            assert int(e.attributes["paid"]) <= int(e.attributes["budget"])
            self.closed.add(key)
            closed_now.add(key)
        paid_now: Counter[tuple[int, int]] = Counter()
        for e in events(cb, "fl.reward"):
            a = e.attributes
            key = (int(a["task"]), int(a["round"]))
            assert key in closed_now, "a reward outside its round's close"
            once = (*key, a["role"], a["recipient"])
            assert once not in self.paid, f"paid twice: {once}"
            self.paid.add(once)
            paid_now[key] += int(a["amount"])
            self.paid_out[key[0]] += int(a["amount"])
        for e in events(cb, "fl.round_closed"):
            key = (int(e.attributes["task"]), int(e.attributes["round"]))
            assert paid_now[key] == int(e.attributes["paid"])
        for e in events(cb, "fl.task_finished"):
            self.paid_out[int(e.attributes["task"])] += int(e.attributes["refund"])
        self.burned += sum(int(e.attributes["amount"]) for e in events(cb, "fl.slash"))
        for e in events(cb, "fl.submission"):
            tr = get_trainer(
                self.c.state, int(e.attributes["task"]), bytes.fromhex(e.attributes["trainer"])
            )
            assert tr is not None and not tr.jailed, "a jailed trainer's submission was accepted"

    @staticmethod
    def _due(state: ChainState) -> list[tuple[int, int]]:
        return due_rounds(state, state.height)

    @invariant()
    def tokens_are_conserved_but_for_burns(self) -> None:
        assert total_supply(self.c.state.app) + self.burned == self.supply0

    @invariant()
    def pools_account_for_every_payment(self) -> None:
        for t, pool in self.pools.items():
            task = get_task(self.c.state, t)
            assert task is not None and task.pool_left >= 0
            assert task.pool_left + self.paid_out[t] == pool


TestContractMachine = ContractMachine.TestCase
TestContractMachine.settings = settings(
    max_examples=15,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
