"""What a trainer does to its trained model before submitting: DP noise, or (evaluation only)
an attack. Returns ``transform(global_state, trained_state) -> safetensors bytes``.

Attacks exist to measure the chain's defences (`trainer.attack` in config.toml, empty by
default); under PoL the transcript stays the honest one, so the verifier sees an update the
recorded training did not produce. ``alie``/``ipm`` use the honest updates of the round that
were already committed (in a plaintext task they are public content), as a real attacker
watching the chain could. ``label_flip`` is no transform: the poison is in the data, which
``node.fl.data.local_dataset`` flips at load, so the trainer's transcript is genuine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

TransformFn = Callable[[dict[str, Any], dict[str, Any]], bytes]


def make_transform(spec: Any, task_id: int, round_: int, trainer: bytes, attack: str,
                   samples: int, honest: Sequence[np.ndarray] = (),
                   population: int | None = None) -> TransformFn:
    from fl.aggregate import dequantize, quantize
    from fl.models import flatten, to_safetensors, unflatten

    dp = None
    if spec.privacy in ("dp", "dp+he"):
        from fl.privacy import DpParams

        dp = DpParams.of(spec.dp_clip_q / (1 << 24), spec.dp_noise_milli / 1000,
                         max(spec.dp_delta_ppb, 1) / 1e9,
                         max(population or spec.clients_per_round, spec.clients_per_round),
                         spec.clients_per_round)

    def transform(gstate: dict[str, Any], trained: dict[str, Any]) -> bytes:
        g = flatten(gstate)
        delta = flatten(trained) - g
        if attack:
            delta = _attack(attack, delta, honest, spec.clients_per_round, round_, trainer)
        if dp is not None:
            from fl.privacy import privatize

            # fresh OS randomness: a seed derived from public labels (task, round, trainer)
            # would let anyone regenerate the noise and subtract it
            q = privatize(delta, dp, seed=None).values
        else:
            q = quantize(g + delta) - quantize(g)
        new = dequantize(quantize(g) + q)
        return to_safetensors(unflatten(new, gstate))

    return transform


def _attack(name: str, own: np.ndarray, honest: Sequence[np.ndarray], clients: int,
            round_: int, trainer: bytes) -> np.ndarray:
    from fl.attacks import AttackContext, craft

    rng = np.random.default_rng(int.from_bytes(trainer[:8], "big") ^ round_)
    pool = list(honest) or [own]  # without committed peers, the attacker's own view
    ctx = AttackContext(honest=pool, own=own, num_clients=max(clients, len(pool) + 1),
                        num_malicious=1, rng=rng)
    return np.asarray(craft(name, ctx), dtype=np.float32)
