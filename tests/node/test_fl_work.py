"""The node's FL work functions end to end on the digits MLP: train, reveal, verify, aggregate."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fl.models import build_model, state_dict_of, to_safetensors
from node.config import TrainerConfig
from node.fl.data import local_dataset
from node.fl.sink import PrefetchedSink
from node.fl.work import (
    Candidate,
    TaskModel,
    aggregate_round,
    reveal_for,
    train_round,
    verify_submission,
)
from storage.store import ContentStore
from storage.tensors import bytes_cid

CHUNK = 1024 * 1024
TASK = TaskModel("mlp", {}, {"optimizer": "sgd", "lr": "0.05", "epochs": 1, "batch_size": 16,
                             "seed": 7}, pol_k=4)


@pytest.fixture(scope="module")
def global_model() -> tuple[bytes, bytes]:
    data = to_safetensors(state_dict_of(build_model("mlp", {}, seed=1)))
    return data, bytes(bytes_cid(data, chunk_size=CHUNK))


def part(i: int) -> TrainerConfig:
    return TrainerConfig(dataset="digits", partition_index=i, partition_count=4)


def test_train_verify_and_aggregate(tmp_path: Path, global_model: tuple[bytes, bytes]) -> None:
    gbytes, gcid = global_model
    round_id = hashlib.sha256(b"chain/1/1").digest()
    outs = [train_round(TASK, gbytes, gcid, local_dataset(part(i)), round_id, CHUNK, "cpu")
            for i in range(3)]
    # The sink named every object exactly as the content store does.
    with ContentStore(tmp_path / "c.db", chunk_size=CHUNK) as store:
        for o in outs:
            assert set(o.sink.flush(store)) == set(o.sink.objects)
            assert store.has(o.transcript_cid) and store.has(o.update_cid)
        # A validator verifies from prefetched objects, under both policies.
        o = outs[0]
        seed = hashlib.sha256(b"block").digest()
        rcid, rsink = reveal_for(o.transcript, local_dataset(part(0)), seed, CHUNK)
        objects = {**o.sink.objects, **rsink.objects}
        for policy, reveal in (("attest", None), ("replay", rcid)):
            v = verify_submission(TASK, o.transcript_cid, PrefetchedSink(objects), seed=seed,
                                  policy=policy, global_cid=gcid, round_id=round_id,
                                  update_cid=o.update_cid, reveal_cid=reveal,
                                  data_root=o.data_root, samples=o.samples)
            assert v.ok, (policy, v.reason)
        # A wrong round id is caught.
        v = verify_submission(TASK, o.transcript_cid, PrefetchedSink(objects), seed=seed,
                              policy="attest", global_cid=gcid, round_id=b"x" * 32,
                              update_cid=o.update_cid, reveal_cid=None, data_root=o.data_root,
                              samples=o.samples)
        assert not v.ok and v.reason.startswith("round_mismatch")
    cands = [Candidate(bytes([i]) * 20, o.update_cid, o.samples, o.sink.objects[o.update_cid], i)
             for i, o in enumerate(outs)]
    a = aggregate_round("fedavg", {}, gbytes, cands)
    b = aggregate_round("fedavg", {}, gbytes, list(reversed(cands)))
    assert a.new_model == b.new_model and a.digest == b.digest  # order-free, bit-identical
    assert all(v[0] for v in a.verdicts.values())
    bad = Candidate(b"\x09" * 20, b"\x01" * 36, 10, b"not safetensors", 9)
    c = aggregate_round("fedavg", {}, gbytes, [*cands, bad])
    assert bad.trainer in c.errors and c.new_model == a.new_model


def test_screen_context_reads_the_tasks_validation_set(global_model: tuple[bytes, bytes]) -> None:
    # Prepare: three honest updates and a 60-sample digits validation set
    import numpy as np

    from fl.aggregate import quantize
    from fl.data import DatasetError, load_digits
    from fl.data.validation import validation_to_bytes
    from fl.models import flatten, from_safetensors
    from fl.models.exact import ExactModel, ValidationLoss
    from node.fl.work import screen_context

    gbytes, gcid = global_model
    round_id = hashlib.sha256(b"chain/1/2").digest()
    outs = [train_round(TASK, gbytes, gcid, local_dataset(part(i)), round_id, CHUNK, "cpu")
            for i in range(3)]
    cands = [Candidate(bytes([i]) * 20, o.update_cid, o.samples, o.sink.objects[o.update_cid], i)
             for i, o in enumerate(outs)]
    digits = load_digits()
    val = digits.subset(np.arange(60))
    # Execute
    ctx = screen_context("mlp", {}, TASK.train, validation_to_bytes(val), gbytes)
    strict = aggregate_round("robust", {"max_val_rise": "-1"}, gbytes, cands, ctx)
    plain = aggregate_round("robust", {"max_val_rise": "-1"}, gbytes, cands,
                            screen_context("mlp", {}, TASK.train))
    # Assert: the oracle is the exact loss around the round's global model, the screen uses it
    # (a threshold every update exceeds), and an unusable set is an error (the verifier then screens without it)
    assert ctx.validation is not None and ctx.local_batch == 16
    gq = quantize(flatten(from_safetensors(gbytes)))
    direct = ValidationLoss(ExactModel("mlp"), gq, val.x.reshape(60, 64), val.y)
    zero = np.zeros_like(gq)
    assert ctx.validation(zero) == direct(zero) > 0
    assert not any(v[0] for v in strict.verdicts.values())
    for t, v in plain.verdicts.items():  # what the plain screen accepted, the loss rejects
        assert strict.verdicts[t][1] == ("raises_validation_loss" if v[0] else v[1])
    assert sum(v[0] for v in plain.verdicts.values()) >= 2
    with pytest.raises(DatasetError, match="not valid safetensors"):
        screen_context("mlp", {}, TASK.train, b"not safetensors", gbytes)
    with pytest.raises(DatasetError, match="label outside"):
        bad = digits.subset(np.arange(5))
        screen_context("mlp", {"num_classes": 3}, TASK.train, validation_to_bytes(bad), gbytes)


def test_a_label_flipper_trains_on_flipped_labels_and_its_transcript_is_genuine(
        global_model: tuple[bytes, bytes]) -> None:
    # Prepare: the same part of the data for an honest trainer and a flipper (evaluation only)
    honest = local_dataset(part(0))
    flipped = local_dataset(TrainerConfig(dataset="digits", partition_index=0,
                                          partition_count=4, attack="label_flip"))
    gbytes, gcid = global_model
    round_id = hashlib.sha256(b"chain/1/2").digest()
    seed = hashlib.sha256(b"later block").digest()

    # Execute
    o = train_round(TASK, gbytes, gcid, flipped, round_id, CHUNK, "cpu")
    rcid, rsink = reveal_for(o.transcript, flipped, seed, CHUNK)
    v = verify_submission(TASK, o.transcript_cid, PrefetchedSink({**o.sink.objects,
                                                                  **rsink.objects}),
                          seed=seed, policy="replay", global_cid=gcid, round_id=round_id,
                          update_cid=o.update_cid, reveal_cid=rcid, data_root=o.data_root,
                          samples=o.samples)

    # Assert: the same samples with y -> 9 - y, and PoL passes it (the screen's job)
    assert (flipped.x == honest.x).all() and (flipped.y == 9 - honest.y).all()
    assert v.ok, v.reason
