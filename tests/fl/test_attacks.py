"""The evaluation-only attacks produce what their papers describe."""

from __future__ import annotations

import numpy as np
import pytest

from fl.attacks import ATTACKS, AttackContext, alie_z, craft, flip_labels, needs_own_training
from fl.data import load_digits


def _ctx(**kw: object) -> AttackContext:
    rng = np.random.default_rng(0)
    honest = [rng.normal(0.1, 1.0, 500).astype(np.float32) for _ in range(8)]
    base = {"honest": honest, "own": honest[0], "num_clients": 10, "num_malicious": 2, "rng": rng}
    base.update(kw)
    return AttackContext(**base)  # type: ignore[arg-type]


def test_alie_z_matches_the_paper() -> None:
    # n = 50, f = 12 -> s = 14, z = Phi^-1(36/50) ~ 0.58 (Baruch et al. 2019)
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-3)
    assert alie_z(10, 1) == 0.0


@pytest.mark.parametrize(
    ("attack", "check"),
    [
        ("sign_flip", lambda out, c: np.allclose(out, -c.own)),
        ("scaling", lambda out, c: np.allclose(out, 10 * c.own)),
        ("label_flip", lambda out, c: np.allclose(out, c.own)),
        (
            "gaussian",
            lambda out, c: abs(float(out.std()) - 0.1) < 0.02 and abs(float(out.mean())) < 0.02,
        ),
        ("ipm", lambda out, c: np.allclose(out, -0.5 * np.mean(c.honest, axis=0), atol=1e-6)),
        ("free_rider", lambda out, c: not out.any()),
        ("free_rider_copy", lambda out, c: any(np.array_equal(out, h) for h in c.honest)),
        (
            "alie",
            lambda out, c: np.allclose(
                out, np.mean(c.honest, axis=0) - alie_z(10, 2) * np.std(c.honest, axis=0), atol=1e-5
            ),
        ),
    ],
)
def test_each_attack(attack: str, check: object) -> None:
    ctx = _ctx()
    out = craft(attack, ctx)
    assert out.dtype == np.float32 and out.shape == (500,)
    assert check(out, ctx)  # type: ignore[operator]


def test_attack_list_and_errors() -> None:
    assert set(ATTACKS) == {"sign_flip", "gaussian", "scaling", "label_flip", "alie", "ipm",
                            "free_rider", "free_rider_copy"}  # fmt: skip
    assert needs_own_training("sign_flip") and not needs_own_training("alie")
    with pytest.raises(ValueError, match="unknown attack"):
        craft("backdoor", _ctx())
    with pytest.raises(ValueError, match="own trained delta"):
        craft("sign_flip", _ctx(own=None))


def test_label_flip_maps_labels() -> None:
    ds = load_digits().subset(np.arange(20))
    assert np.array_equal(flip_labels(ds).y, 9 - ds.y)
