"""SPADE layer: fast path == dense path == the published formula (outputs and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from optest import LABEL_CASES, RESOLUTIONS, needs_ext

import semnorm
from semnorm.nn import SPADE
from semnorm.testing import natural_labels

C, L, HID = 6, 5, 8
IMPLS = [pytest.param("native", marks=needs_ext), "reference"]
FASTS = ["never", "always", "auto"]


def published_state(c=C, num_classes=L, hidden=HID, k=3, edge=False, dtype=torch.float64):
    """A state dict laid out as the published SPADE layer's (random tensors of the published shapes)."""
    g = torch.Generator().manual_seed(1)
    r = lambda *s: (0.3 * torch.randn(*s, generator=g, dtype=torch.float64)).to(dtype)  # noqa: E731
    return {
        "param_free_norm.running_mean": r(c),
        "param_free_norm.running_var": 0.5 + torch.rand(c, generator=g, dtype=torch.float64).to(dtype),
        "param_free_norm.num_batches_tracked": torch.tensor(3),
        "mlp_shared.0.weight": r(hidden, num_classes + int(edge), k, k),
        "mlp_shared.0.bias": r(hidden),
        "mlp_gamma.weight": r(c, hidden, k, k),
        "mlp_gamma.bias": r(c),
        "mlp_beta.weight": r(c, hidden, k, k),
        "mlp_beta.bias": r(c),
    }


def published_spade(x, labels, sd, num_classes, training=True, norm="batch", edge=None, buffers=None):
    """The published layer's math, eagerly: one-hot -> nearest resize -> conv -> relu -> conv, BN."""
    onehot = TF.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).to(x.dtype)
    if edge is not None:
        onehot = torch.cat([onehot, edge.to(x.dtype)], 1)
    seg = TF.interpolate(onehot, size=x.shape[-2:], mode="nearest")
    pad = sd["mlp_shared.0.weight"].shape[-1] // 2
    actv = torch.relu(TF.conv2d(seg, sd["mlp_shared.0.weight"], sd["mlp_shared.0.bias"], padding=pad))
    gamma = TF.conv2d(actv, sd["mlp_gamma.weight"], sd["mlp_gamma.bias"], padding=pad)
    beta = TF.conv2d(actv, sd["mlp_beta.weight"], sd["mlp_beta.bias"], padding=pad)
    if norm == "instance":
        xhat = TF.instance_norm(x, eps=1e-5)
    else:
        rm, rv = buffers if buffers is not None else (None, None)
        xhat = TF.batch_norm(x, rm, rv, None, None, training=training, momentum=0.1, eps=1e-5)
    return xhat * (1 + gamma) + beta


def run(fn, x, params, seed=2):
    """Output and gradients (x, then params) of sum(y * random)."""
    y = fn(x)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(y.dtype)
    grads = torch.autograd.grad((y * w).sum(), [x, *params])
    return [y.detach(), *grads]


def compare(layer, x, labels, sd, num_classes, edge=None, tol=1e-9, norm="batch", **kw):
    names = [n for n, _ in layer.named_parameters()]
    leaf = {n: sd[n].clone().requires_grad_() for n in names}
    ref_sd = {**sd, **leaf}
    expected = run(lambda t: published_spade(t, labels, ref_sd, num_classes, norm=norm, edge=edge, **kw),
                   x, [leaf[n] for n in names])
    actual = run(lambda t: layer(t, labels, edge), x, list(layer.parameters()))
    for name, a, e in zip(["y", "x", *names], actual, expected):
        torch.testing.assert_close(a, e, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")


def make_layer(fast="auto", impl=None, k=3, edge=False, norm="batch", num_classes=L, c=C, dtype=torch.float64,
               threshold=0.5):
    layer = SPADE(c, num_classes, norm=norm, kernel_size=k, hidden=HID, edge=edge, impl=impl, fast=fast,
                  fast_threshold=threshold).to(dtype)
    if norm != "instance":
        layer.load_state_dict(published_state(c, num_classes, HID, k, edge, dtype), strict=True)
    else:
        sd = {k_: v for k_, v in published_state(c, num_classes, HID, k, edge, dtype).items()
              if not k_.startswith("param_free_norm")}
        layer.load_state_dict(sd, strict=True)
    return layer


def test_published_names_load_strict():
    layer = SPADE(C, L, hidden=HID)
    assert set(layer.state_dict()) == set(published_state())
    layer.load_state_dict(published_state(dtype=torch.float32), strict=True)
    assert layer.mlp_shared[0].weight.shape == (HID, L, 3, 3)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fast", FASTS)
@pytest.mark.parametrize("case", sorted(LABEL_CASES))
def test_matches_published(impl, fast, case):
    labels = LABEL_CASES[case](2, 24, 20, L)
    x = torch.randn(2, C, 24, 20, dtype=torch.float64, requires_grad=True)
    compare(make_layer(fast, impl), x, labels, published_state(), L)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fast", ["never", "always"])
@pytest.mark.parametrize("sizes", RESOLUTIONS, ids=str)
def test_resolutions(impl, fast, sizes):
    (h, w), (hl, wl) = sizes
    labels = natural_labels(2, hl, wl, L, classes_per_image=2)
    x = torch.randn(2, C, h, w, dtype=torch.float64, requires_grad=True)
    compare(make_layer(fast, impl), x, labels, published_state(), L)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("fast", ["never", "always"])
def test_kernel_sizes(k, fast):
    labels = natural_labels(2, 64, 48, L, classes_per_image=2)
    x = torch.randn(2, C, 32, 24, dtype=torch.float64, requires_grad=True)
    compare(make_layer(fast, k=k), x, labels, published_state(k=k), L)


@pytest.mark.parametrize("fast", ["never", "always"])
def test_edge_channel(fast):
    labels = natural_labels(2, 32, 32, L, classes_per_image=2)
    edge = torch.zeros(2, 1, 32, 32, dtype=torch.float64)
    edge[:, :, 10:12, 3:20] = 1.0
    x = torch.randn(2, C, 16, 16, dtype=torch.float64, requires_grad=True)
    layer = make_layer(fast, edge=True)
    compare(layer, x, labels, published_state(edge=True), L, edge=edge)
    # one-hot input with the edge as its last channel
    onehot = torch.cat([TF.one_hot(labels, L).permute(0, 3, 1, 2).double(), edge], 1)
    torch.testing.assert_close(layer(x, onehot), layer(x, labels, edge), rtol=0, atol=0)
    with pytest.raises(ValueError, match="edge"):
        layer(x, labels)


@pytest.mark.parametrize("label_dtype", [torch.int32, torch.uint8])
def test_label_dtypes(label_dtype):
    labels = natural_labels(2, 32, 32, L, classes_per_image=2)
    x = torch.randn(2, C, 16, 16, dtype=torch.float64, requires_grad=True)
    compare(make_layer("always"), x, labels.to(label_dtype), published_state(), L)


def test_one_hot_input():
    labels = natural_labels(2, 24, 24, L, classes_per_image=3)
    onehot = TF.one_hot(labels, L).permute(0, 3, 1, 2).double()
    x = torch.randn(2, C, 12, 12, dtype=torch.float64)
    layer = make_layer("always")
    torch.testing.assert_close(layer(x, onehot), layer(x, labels), rtol=0, atol=0)
    with pytest.raises(ValueError, match="channels"):
        layer(x, onehot[:, 1:])


def test_dont_care_label():
    """label_nc - 1 standing for 'unknown' is an ordinary class of the one-hot map."""
    labels = natural_labels(2, 32, 32, L - 1, classes_per_image=3)
    labels[:, 5:15, 5:20] = L - 1
    x = torch.randn(2, C, 32, 32, dtype=torch.float64, requires_grad=True)
    for fast in ("never", "always"):
        compare(make_layer(fast), x, labels, published_state(), L)


def test_large_interior_and_absent_classes():
    """Big regions (most pixels interior), many classes never present, 151 classes as in ADE20K."""
    labels = torch.zeros(2, 40, 40, dtype=torch.long)
    labels[:, :, 20:] = 150
    labels[1, 10:30, 5:15] = 77
    x = torch.randn(2, C, 40, 40, dtype=torch.float64, requires_grad=True)
    layer = make_layer("always", num_classes=151)
    compare(layer, x, labels, published_state(num_classes=151), 151)
    assert layer.boundary_mask(labels, (40, 40)).float().mean() < 0.5


@pytest.mark.parametrize("k", [3, 5])
def test_hidden_vectors_deduplicated(k):
    """The fast path evaluates one hidden vector per class and per distinct k x k window that is not
    inside one class (brute force over every pixel), and gives the dense result."""
    labels = natural_labels(2, 40, 36, L, classes_per_image=3)
    x = torch.randn(2, C, 20, 18, dtype=torch.float64, requires_grad=True)
    layer = make_layer("always", k=k)
    lab = TF.interpolate(labels[:, None].double(), size=(20, 18), mode="nearest")[:, 0].long()
    r = k // 2
    padded = TF.pad(lab, (r, r, r, r), value=L)
    windows = {tuple(padded[n, i:i + k, j:j + k].reshape(-1).tolist()) for n in range(2) for i in range(20)
               for j in range(18)}
    distinct = {w for w in windows if len(set(w)) > 1}
    seen = []
    original = layer._hidden_table
    layer._hidden_table = lambda digits, edge_part: seen.append(digits.shape[0]) or original(digits, edge_part)
    compare(layer, x, labels, published_state(k=k), L)
    assert seen == [len(distinct)]


def test_boundary_mask_brute_force():
    """Boundary pixels: those whose k x k window leaves the image or holds two classes."""
    labels = natural_labels(2, 20, 17, L, classes_per_image=3)
    for k in (3, 5):
        mask = make_layer(k=k).boundary_mask(labels, (20, 17))
        r = k // 2
        expected = torch.ones_like(mask)
        for n in range(2):
            for i in range(r, 20 - r):
                for j in range(r, 17 - r):
                    expected[n, i, j] = bool((labels[n, i - r:i + r + 1, j - r:j + r + 1] != labels[n, i, j]).any())
        assert torch.equal(mask, expected)
    assert not make_layer(k=1).boundary_mask(labels, (20, 17)).any()


def test_auto_falls_back_on_fragmented_maps():
    layer = make_layer("auto", threshold=0.3)
    x = torch.randn(2, C, 16, 16, dtype=torch.float64)
    assert layer._fast_modulation(torch.randint(0, L, (2, 16, 16)), x.shape[-2:], None) is None  # random: dense
    big = torch.zeros(2, 16, 16, dtype=torch.long)
    big[:, 8:] = 1
    assert layer._fast_modulation(big, x.shape[-2:], None) is not None
    with pytest.raises(ValueError, match="fast"):
        SPADE(C, L, fast="sometimes")


def test_batch_of_one_in_training_raises():
    layer = make_layer("always")
    x = torch.randn(1, C, 1, 1, dtype=torch.float64)
    with pytest.raises(ValueError):
        layer(x, torch.zeros(1, 1, 1, dtype=torch.long))


@pytest.mark.parametrize("fast", ["never", "always"])
def test_eval_mode_running_stats(fast):
    layer = make_layer(fast).eval()
    sd = published_state()
    labels = natural_labels(2, 16, 16, L, classes_per_image=2)
    x = torch.randn(2, C, 16, 16, dtype=torch.float64, requires_grad=True)
    compare(layer, x, labels, sd, L, training=False,
            buffers=(sd["param_free_norm.running_mean"], sd["param_free_norm.running_var"]))


def test_training_updates_running_stats_like_batchnorm():
    sd = published_state()
    rm, rv = sd["param_free_norm.running_mean"].clone(), sd["param_free_norm.running_var"].clone()
    layer = make_layer("always")
    x = torch.randn(2, C, 8, 8, dtype=torch.float64)
    layer(x, torch.zeros(2, 8, 8, dtype=torch.long))
    TF.batch_norm(x, rm, rv, training=True, momentum=0.1, eps=1e-5)
    torch.testing.assert_close(layer.param_free_norm.running_mean, rm)
    torch.testing.assert_close(layer.param_free_norm.running_var, rv)
    assert int(layer.param_free_norm.num_batches_tracked) == 4


@pytest.mark.parametrize("norm", ["instance", "syncbatch"])
@pytest.mark.parametrize("fast", ["never", "always"])
def test_norm_variants(norm, fast):
    labels = natural_labels(2, 16, 16, L, classes_per_image=2)
    x = torch.randn(2, C, 16, 16, dtype=torch.float64, requires_grad=True)
    compare(make_layer(fast, norm=norm), x, labels, published_state(), L, norm=norm)


@pytest.mark.parametrize("fast", ["never", "always"])
def test_channels_last_and_float32(fast):
    labels = natural_labels(2, 32, 32, L, classes_per_image=2)
    x = torch.randn(2, C, 16, 16, dtype=torch.float32).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    compare(make_layer(fast, dtype=torch.float32), x, labels, published_state(dtype=torch.float32), L, tol=1e-4)


@pytest.mark.parametrize("fast", ["never", "always"])
def test_autocast_bfloat16(fast):
    layer = make_layer(fast, dtype=torch.float32)
    labels = natural_labels(2, 32, 32, L, classes_per_image=2)
    x = torch.randn(2, C, 16, 16, requires_grad=True)
    expected = layer(x, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x, labels)
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(y.float(), expected.detach(), rtol=0.05, atol=0.1)


def test_compile_fullgraph():
    """Under torch.compile the layer takes the dense path (fast="auto" never branches on data there)."""
    layer = make_layer("auto", dtype=torch.float32)
    labels = natural_labels(2, 16, 16, L, classes_per_image=2)
    x = torch.randn(2, C, 8, 8, requires_grad=True)
    eager = run(lambda t: layer(t, labels), x, list(layer.parameters()))
    compiled_layer = torch.compile(layer, fullgraph=True)
    out = run(lambda t: compiled_layer(t, labels), x, list(layer.parameters()))
    for a, e in zip(out, eager):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_bad_inputs():
    layer = make_layer()
    with pytest.raises(ValueError, match="x must"):
        layer(torch.randn(2, C + 1, 4, 4, dtype=torch.float64), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="batch"):
        layer(torch.randn(2, C, 4, 4, dtype=torch.float64), torch.zeros(3, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="kernel_size"):
        SPADE(C, L, kernel_size=2)
    for fast in FASTS:
        for bad in (L, -1):
            labels = torch.zeros(2, 4, 4, dtype=torch.long)
            labels[1, 2, 3] = bad
            with pytest.raises(IndexError, match="labels must lie"):
                make_layer(fast)(torch.randn(2, C, 4, 4, dtype=torch.float64), labels)


def test_exported():
    assert semnorm.nn.SPADE is SPADE


@pytest.mark.parametrize("fast", ["always", "never"])
def test_modulation_scales(fast):
    """``scales`` (SEAN's blend weights) scale gamma and beta through the weights, with their gradients."""
    layer = make_layer(fast)
    labels = natural_labels(2, 24, 20, L, classes_per_image=3)
    plain = layer.modulation(labels, (12, 10))
    s = torch.tensor([0.3, -1.7], dtype=torch.float64, requires_grad=True)
    scaled = layer.modulation(labels, (12, 10), scales=(s[0], s[1]))
    upstream = [torch.randn_like(t) for t in plain]
    for p, q in zip(plain, scaled):
        assert p.shape == q.shape
    torch.testing.assert_close(scaled[0], 0.3 * plain[0].detach())
    torch.testing.assert_close(scaled[1], -1.7 * plain[1].detach())
    (grad_s,) = torch.autograd.grad(sum((t * u).sum() for t, u in zip(scaled, upstream)), s)
    expected = torch.stack([(t.detach() * u).sum() for t, u in zip(plain, upstream)])
    torch.testing.assert_close(grad_s, expected)
