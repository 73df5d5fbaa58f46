"""Model registry, deterministic init, safetensors round trips and the flat parameter order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl.models import (
    ModelConfigError,
    ModelFormatError,
    build_model,
    check_compatible,
    default_config,
    flatten,
    from_safetensors,
    input_shape,
    model_ids,
    num_params,
    output_weight_range,
    parameter_order,
    state_dict_of,
    to_safetensors,
    unflatten,
)


@pytest.mark.parametrize(
    ("model_id", "params"), [("mlp", 4810), ("mnist_cnn", 46_730), ("cifar_cnn", 188_810)]
)
def test_registry_builds_models_of_documented_size(model_id: str, params: int) -> None:
    model = build_model(model_id)
    assert num_params(state_dict_of(model)) == params
    out = model(torch.zeros(2, *input_shape(model_id)))
    assert out.shape == (2, 10)


def test_registry_lists_and_defaults() -> None:
    assert model_ids() == ["cifar_cnn", "mlp", "mnist_cnn"]
    cfg = default_config("mlp")
    cfg["hidden"].append(1)
    assert default_config("mlp")["hidden"] == [64]  # callers cannot mutate the defaults


@pytest.mark.parametrize(
    ("model_id", "config", "message"),
    [
        ("resnet", {}, "unknown model id"),
        ("mlp", {"depth": 3}, "unknown config key"),
        ("mlp", {"hidden": 64}, "list of positive ints"),
        ("mlp", {"input_dim": 1.5}, "positive int"),
        ("mlp", {"input_dim": -1}, "positive int"),
        ("mnist_cnn", {"channels": [8]}, "2..2 entries"),
        ("mnist_cnn", {"image_size": 8}, "too small"),
    ],
)
def test_bad_configs_are_clear_errors(
    model_id: str, config: dict[str, object], message: str
) -> None:
    with pytest.raises(ModelConfigError, match=message):
        build_model(model_id, config)


def test_initial_weights_follow_the_seed_and_leave_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = flatten(state_dict_of(build_model("mnist_cnn", seed=7)))
    after = torch.rand(1)
    b = flatten(state_dict_of(build_model("mnist_cnn", seed=7)))
    c = flatten(state_dict_of(build_model("mnist_cnn", seed=8)))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert torch.equal(before, after)


def test_safetensors_roundtrip_is_exact() -> None:
    state = state_dict_of(build_model("mnist_cnn", seed=1))
    data = to_safetensors(state)
    back = from_safetensors(data)
    check_compatible(back, state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert to_safetensors(back) == data  # one state, one byte string


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:5], "too short"),
        (lambda b: b[:-10], "invalid safetensors"),
        (lambda b: b"\xff" * 8 + b[8:], "invalid safetensors"),
        (lambda b: b"not bytes", "invalid safetensors"),
    ],
)
def test_corrupt_safetensors_are_rejected(mutate: object, message: str) -> None:
    data = to_safetensors(state_dict_of(build_model("mlp")))
    with pytest.raises(ModelFormatError, match=message):
        from_safetensors(mutate(data))  # type: ignore[operator]


def test_safetensors_rejects_non_float_and_nan() -> None:
    from safetensors.torch import save

    with pytest.raises(ModelFormatError, match="float32"):
        from_safetensors(save({"w": torch.zeros(2, dtype=torch.int64)}))
    with pytest.raises(ModelFormatError, match="NaN"):
        from_safetensors(save({"w": torch.tensor([float("nan")])}))
    with pytest.raises(ModelFormatError, match="float32"):
        to_safetensors({"w": torch.zeros(2, dtype=torch.float64)})


def test_check_compatible_names_and_shapes() -> None:
    state = state_dict_of(build_model("mlp"))
    other = state_dict_of(build_model("mlp", {"hidden": [32]}))
    with pytest.raises(ModelFormatError, match="shape"):
        check_compatible(other, state)
    with pytest.raises(ModelFormatError, match="missing"):
        check_compatible({k: v for k, v in state.items() if k != "net.1.bias"}, state)


def test_flat_order_is_sorted_names_row_major() -> None:
    state = {
        "b": torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        "a": torch.tensor([5.0]),
        "a.z": torch.tensor([6.0]),
    }
    assert [n for n, _ in parameter_order(state)] == ["a", "a.z", "b"]
    np.testing.assert_array_equal(flatten(state), np.array([5, 6, 1, 2, 3, 4], dtype=np.float32))
    back = unflatten(flatten(state), state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(ModelFormatError, match="does not fit"):
        unflatten(np.zeros(5, np.float32), state)


@pytest.mark.parametrize(
    ("model_id", "weight", "shape"),
    [("mlp", "net.3.weight", (10, 64)), ("mnist_cnn", "fc2.weight", (10, 64)),
     ("cifar_cnn", "classifier.3.weight", (10, 128))],
)
def test_output_weight_range_is_the_last_linear_weight_in_flat_order(
        model_id: str, weight: str, shape: tuple[int, int]) -> None:
    # Prepare: the model's flat vector, with the output weight marked
    model = build_model(model_id, seed=0)
    state = state_dict_of(model)
    state[weight] = torch.full(shape, 7.0)
    # Execute
    start, end = output_weight_range(model)
    # Assert: exactly the marked coordinates (the name sort puts it anywhere, e.g. cifar's first)
    flat = flatten(state)
    assert end - start == shape[0] * shape[1]
    assert np.flatnonzero(flat == 7.0).tolist() == list(range(start, end))


def test_output_weight_range_needs_a_linear_layer() -> None:
    with pytest.raises(ModelFormatError, match="no linear output layer"):
        output_weight_range(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()))


# ------------------------------------------------------------------ GEMM convolution (PoL on CUDA)


@pytest.mark.parametrize(
    ("shape", "out_c", "k", "stride", "padding", "dilation"),
    [
        ((4, 1, 28, 28), 10, 5, (1, 1), (0, 0), (1, 1)),  # mnist_cnn conv1
        ((3, 3, 32, 32), 8, 3, (1, 1), (1, 1), (1, 1)),  # cifar_cnn block
        ((2, 2, 11, 9), 3, 3, (2, 1), (1, 2), (1, 2)),  # odd sizes, stride, dilation
    ],
)
def test_gemm_conv2d_matches_conv2d_forward_and_backward(
    shape: tuple[int, int, int, int],
    out_c: int,
    k: int,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> None:
    from torch.nn import functional as F

    from fl.models.layers import gemm_conv2d

    # Prepare: the same input and weights on both paths, in float64 so rounding is not the question
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    w = torch.randn(out_c, shape[1], k, k, generator=g, dtype=torch.float64)
    b = torch.randn(out_c, generator=g, dtype=torch.float64)
    ins = [t.clone().requires_grad_() for t in (x, w, b)]
    ref_ins = [t.clone().requires_grad_() for t in (x, w, b)]
    # Execute
    out = gemm_conv2d(*ins, stride, padding, dilation)
    ref = F.conv2d(*ref_ins, stride=stride, padding=padding, dilation=dilation)
    out.square().sum().backward()
    ref.square().sum().backward()
    # Assert: same shape, values and gradients for input, weight and bias
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    for a, r in zip(ins, ref_ins, strict=True):
        torch.testing.assert_close(a.grad, r.grad)


def test_registry_conv_layers_keep_the_conv2d_state_dict_and_cpu_path() -> None:
    from torch import nn

    from fl.models.layers import Conv2d, gemm_convolutions

    model = build_model("mnist_cnn", seed=0)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and all(isinstance(m, Conv2d) for m in convs)
    assert list(model.state_dict()) == [
        "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
        "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
    ]  # fmt: skip
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    # on CPU the switch changes nothing: oneDNN's convolution is already exact fp32
    with gemm_convolutions():
        inside = model(x)
    assert torch.equal(inside, model(x))
