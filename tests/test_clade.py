"""CLADE layer (plain, instance edges, ICPE): published checkpoints load, and outputs and gradients match
an eager implementation of the published formulation (one-hot, nearest resize, argmax, embedding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import semnorm
from semnorm import CLADE
from semnorm import functional as F
from semnorm.nn._inputs import instance_edges
from semnorm.testing import natural_labels

IMPLS = [None, "reference"]
L = 7  # classes; L - 1 is the don't-care ("unknown") label


# ----------------------------------------------------------------------------------------------
# the published formulation, written out eagerly


def onehot(labels, num_classes):
    return TF.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()


def published_norm(x, norm, running_mean=None, running_var=None, training=True):
    if norm == "instance":
        return TF.instance_norm(x, eps=1e-5)
    return TF.batch_norm(x, running_mean, running_var, training=training, momentum=0.1, eps=1e-5)


def published_clade(p, x, segmap, norm="batch", edge=None, dist=None, running=(None, None), training=True):
    """The published CLADE layer: N(x), one-hot resized (nearest) to x, argmax, embedding lookups,
    ICPE factors from the resized D, ``N(x) * gamma + beta``, and the instance-edge channel."""
    size = x.shape[2:]
    normalized = published_norm(x, norm, *running, training=training)
    seg = TF.interpolate(segmap, size=size, mode="nearest")
    arg = seg.argmax(1)  # (N, H, W)
    gamma = TF.embedding(arg, p["class_specified_affine.weight"]).permute(0, 3, 1, 2)
    beta = TF.embedding(arg, p["class_specified_affine.bias"]).permute(0, 3, 1, 2)
    if dist is not None:
        d = TF.interpolate(dist, size=size, mode="nearest")
        gamma = gamma * (1 + TF.conv2d(d, p["class_specified_affine.dist_conv_w.weight"],
                                       p["class_specified_affine.dist_conv_w.bias"]))
        beta = beta * (1 + TF.conv2d(d, p["class_specified_affine.dist_conv_b.weight"],
                                     p["class_specified_affine.dist_conv_b.bias"]))
    out = normalized * gamma + beta
    if edge is not None:
        e = TF.interpolate(edge, size=size, mode="nearest")
        out = torch.cat((out, TF.conv2d(e, p["inst_conv.weight"], p["inst_conv.bias"])), dim=1)
    return out


def published_state_dict(c, num_classes, norm="batch", edge=False, positional=False):
    """Random tensors of the published shapes under the published names."""
    sd = {}
    if norm != "instance":
        sd["param_free_norm.running_mean"] = torch.randn(c) * 0.1
        sd["param_free_norm.running_var"] = torch.rand(c) + 0.5
        sd["param_free_norm.num_batches_tracked"] = torch.tensor(3)
    sd["class_specified_affine.weight"] = torch.randn(num_classes, c)
    sd["class_specified_affine.bias"] = torch.randn(num_classes, c)
    if positional:
        for name in ("dist_conv_w", "dist_conv_b"):
            sd[f"class_specified_affine.{name}.weight"] = torch.randn(1, 2, 1, 1) * 0.5
            sd[f"class_specified_affine.{name}.bias"] = torch.randn(1) * 0.5
    if edge:
        sd["inst_conv.weight"] = torch.randn(1, 1, 1, 1)
        sd["inst_conv.bias"] = torch.randn(1)
    return sd


def scipy_positional(labels, ignore_label=0, eps=1e-5):
    """ICPE map D as the published preprocessing computes it: 8-connected components of every label
    except ``ignore_label``; offsets from the centroid over the component's max |offset| + eps."""
    ndimage = pytest.importorskip("scipy.ndimage")
    lab = labels.long().numpy()
    d = np.zeros((lab.shape[0], 2) + lab.shape[1:], dtype=np.float64)
    for i in range(lab.shape[0]):
        for cls in np.unique(lab[i]):
            if cls == ignore_label:
                continue
            comp, k = ndimage.label(lab[i] == cls, structure=np.ones((3, 3), dtype=int))
            for j in range(1, k + 1):
                r, col = np.nonzero(comp == j)
                dr, dc = r - r.mean(), col - col.mean()
                d[i, 0, r, col] = dr / (np.abs(dr).max() + eps)
                d[i, 1, r, col] = dc / (np.abs(dc).max() + eps)
    return torch.from_numpy(d).float()


def leaves(sd):
    """Leaf copies: parameters require grad, buffers (running statistics) do not."""
    return {k: v.clone().requires_grad_(v.is_floating_point() and not k.startswith("param_free_norm."))
            for k, v in sd.items()}


def build(c, norm="batch", edge=False, positional=False, impl=None, sd=None, **kw):
    layer = CLADE(c, L, norm=norm, edge=edge, positional=positional, impl=impl, **kw)
    sd = sd if sd is not None else published_state_dict(c, L, norm, edge, positional)
    layer.load_state_dict(sd, strict=True)
    return layer, sd


def compare(layer, sd, x, labels, norm="batch", edge=None, dist=None, atol=2e-5, training=True, fwd=None):
    """Output and gradients (x and every parameter) of the layer vs the published formulation."""
    p = leaves(sd)
    running = (p.get("param_free_norm.running_mean"), p.get("param_free_norm.running_var"))
    x1 = x.detach().clone().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y = layer(x1, labels, **(fwd or {}))
    seg = labels if labels.is_floating_point() else onehot(labels, L)
    if labels.is_floating_point() and edge is None and layer.edge:
        seg, edge = labels[:, :L], labels[:, L:]
    ref = published_clade(p, x2, seg, norm, edge, dist, running, training=training)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=atol)
    g = torch.randn_like(ref)
    (y * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=atol * 10)
    named = dict(layer.named_parameters())
    assert set(named) == {k for k, v in p.items() if v.requires_grad}
    for name, param in named.items():
        torch.testing.assert_close(param.grad, p[name].grad, rtol=1e-4, atol=atol * 50, msg=name)
    if running[0] is not None and training:
        torch.testing.assert_close(layer.param_free_norm.running_mean, running[0].detach())
        torch.testing.assert_close(layer.param_free_norm.running_var, running[1].detach())
    return y


# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edge", [False, True])
@pytest.mark.parametrize("positional", [False, True])
@pytest.mark.parametrize("norm", ["batch", "instance", "syncbatch"])
def test_published_names_and_inits(edge, positional, norm):
    layer = CLADE(16, L, norm=norm, edge=edge, positional=positional)
    sd = published_state_dict(16, L, norm, edge, positional)
    assert set(layer.state_dict()) == set(sd)
    for k, v in layer.state_dict().items():
        assert v.shape == sd[k].shape, k
    w, b = layer.class_specified_affine.weight, layer.class_specified_affine.bias
    assert w.shape == (L, 16) and 0 <= w.min() and w.max() <= 1 and w.std() > 0.1
    assert torch.all(b == 0)
    if positional:
        assert torch.all(layer.class_specified_affine.dist_conv_w.weight == 0)
    layer.load_state_dict(sd, strict=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", ["batch", "instance", "syncbatch"])
@pytest.mark.parametrize("sizes", [((8, 8), (8, 8)), ((6, 10), (17, 23)), ((8, 12), (4, 6))])
def test_matches_published(impl, norm, sizes):
    (h, w), (hl, wl) = sizes
    layer, sd = build(6, norm, impl=impl)
    labels = natural_labels(2, hl, wl, L, classes_per_image=4)
    labels[0, 0, :] = L - 1  # the don't-care label
    compare(layer, sd, torch.randn(2, 6, h, w), labels, norm)


@pytest.mark.parametrize("impl", IMPLS)
def test_onehot_input_and_label_dtypes(impl):
    layer, sd = build(5, impl=impl)
    labels = natural_labels(2, 12, 12, L)
    x = torch.randn(2, 5, 6, 6)
    y = compare(layer, sd, x, onehot(labels, L))
    for dt in (torch.int32, torch.uint8):
        torch.testing.assert_close(layer(x, labels.to(dt)), y)


@pytest.mark.parametrize("impl", IMPLS)
def test_absent_classes_and_dontcare(impl):
    layer, sd = build(4, impl=impl)
    labels = torch.full((2, 8, 8), L - 1)
    labels[:, :3] = 2
    y = compare(layer, sd, torch.randn(2, 4, 8, 8), labels)
    g = layer.class_specified_affine.weight.grad
    present = torch.zeros(L, dtype=torch.bool)
    present[[2, L - 1]] = True
    assert torch.all(g[~present] == 0) and torch.all(g[present].abs().sum(1) > 0)
    assert torch.all(layer.class_specified_affine.bias.grad[~present] == 0)
    assert torch.isfinite(y).all()


def test_fused_matches_reference():
    layer, sd = build(8, edge=True, positional=True)
    ref_layer, _ = build(8, edge=True, positional=True, impl="reference", sd=sd)
    labels = natural_labels(3, 20, 20, L)
    inst = natural_labels(3, 20, 20, 50)
    x = torch.randn(3, 8, 10, 10)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    ys = [m(xi, labels, instance=inst) for m, xi in zip((layer, ref_layer), xs)]
    torch.testing.assert_close(ys[0], ys[1], rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ys[0])
    for y in ys:
        (y * g).sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-4, atol=1e-4)
    for (n, a), (_, b) in zip(layer.named_parameters(), ref_layer.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-3, msg=n)


def test_batch_size_one_training_raises():
    layer, _ = build(4)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(torch.randn(1, 4, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        TF.batch_norm(torch.randn(1, 4, 1, 1), None, None, training=True)
    layer.eval()
    assert layer(torch.randn(1, 4, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long)).shape == (1, 4, 1, 1)


@pytest.mark.parametrize("impl", IMPLS)
def test_eval_uses_running_stats(impl):
    layer, sd = build(6, impl=impl)
    layer.eval()
    labels = natural_labels(2, 8, 8, L)
    with torch.no_grad():
        before = layer.param_free_norm.running_mean.clone()
    compare(layer, sd, torch.randn(2, 6, 8, 8) * 3 + 1, labels, training=False)
    assert torch.equal(layer.param_free_norm.running_mean, before)
    assert int(layer.param_free_norm.num_batches_tracked) == 3


def test_channels_last_and_autocast():
    layer, sd = build(8, edge=True, positional=True)
    labels = natural_labels(2, 16, 16, L)
    edge = instance_edges(natural_labels(2, 16, 16, 30))
    x = torch.randn(2, 8, 8, 8)
    y = layer(x, labels, edge=edge)
    y_cl = layer(x.contiguous(memory_format=torch.channels_last), labels, edge=edge)
    torch.testing.assert_close(y_cl, y, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_bf = layer(x, labels, edge=edge)
    torch.testing.assert_close(y_bf.float(), y, rtol=5e-2, atol=5e-2)
    y_bf16x = layer(x.bfloat16(), labels, edge=edge)
    assert y_bf16x.dtype == torch.bfloat16
    torch.testing.assert_close(y_bf16x.float(), y, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("impl", IMPLS)
def test_torch_compile_fullgraph(impl):
    torch._dynamo.reset()
    layer, sd = build(4, edge=True, positional=True, impl=impl)
    labels = natural_labels(2, 8, 8, L)
    edge = instance_edges(natural_labels(2, 8, 8, 9))
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager" if impl == "reference" else "inductor")
    x = torch.randn(2, 4, 8, 8)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager, _ = build(4, edge=True, positional=True, impl=impl, sd=sd)
    # the reference connected-components loop is data dependent (not traceable): give it D precomputed
    kw = dict(edge=edge, positional_map=F.intra_class_positional(labels, 0) if impl == "reference" else None)
    y1, y2 = compiled(x1, labels, **kw), eager(x2, labels, **kw)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    y1.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.class_specified_affine.weight.grad, eager.class_specified_affine.weight.grad,
                               rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# instance edges


def naive_edges(inst):
    n, h, w = inst.shape
    e = torch.zeros(n, 1, h, w)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and inst[i, yy, xx] != inst[i, y, x]:
                        e[i, 0, y, x] = 1
    return e


def test_instance_edges():
    inst = natural_labels(2, 9, 11, 6)
    torch.testing.assert_close(instance_edges(inst), naive_edges(inst))
    torch.testing.assert_close(instance_edges(inst[:, None].int()), naive_edges(inst))
    with pytest.raises(ValueError, match="instance"):
        instance_edges(torch.zeros(5, 5))


@pytest.mark.parametrize("impl", IMPLS)
def test_edge_channel(impl):
    layer, sd = build(5, edge=True, impl=impl)
    labels = natural_labels(2, 16, 16, L)
    inst = natural_labels(2, 16, 16, 40)
    edge = naive_edges(inst)
    x = torch.randn(2, 5, 8, 8)
    y1 = compare(layer, sd, x, labels, edge=edge, fwd=dict(edge=edge))
    assert y1.shape == (2, 6, 8, 8)
    layer.zero_grad()
    layer.load_state_dict(sd)
    compare(layer, sd, x, labels, edge=edge, fwd=dict(instance=inst))
    layer.zero_grad()
    layer.load_state_dict(sd)
    # the published one-hot input: label channels + the edge channel last
    seg = torch.cat((onehot(labels, L), edge), 1)
    torch.testing.assert_close(layer(x, seg), y1, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="edge"):
        layer(x, labels)
    with pytest.raises(ValueError, match="channels"):
        layer(x, onehot(labels, L))


# ----------------------------------------------------------------------------------------------
# ICPE


def test_icpe_map_matches_published_preprocessing():
    labels = natural_labels(2, 24, 20, L)
    d = F.intra_class_positional(labels, ignore_label=0)
    torch.testing.assert_close(d, scipy_positional(labels, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sizes", [((8, 8), (16, 16)), ((12, 10), (12, 10))])
def test_icpe_matches_published(impl, sizes):
    (h, w), (hl, wl) = sizes
    layer, sd = build(6, positional=True, impl=impl)
    labels = natural_labels(2, hl, wl, L)
    dist = scipy_positional(labels)
    x = torch.randn(2, 6, h, w)
    y = compare(layer, sd, x, labels, dist=dist)  # D computed on the fly
    layer.zero_grad()
    torch.testing.assert_close(layer(x, labels, positional_map=dist), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_icpe_horizontal_flip(impl):
    layer, sd = build(6, positional=True, impl=impl)
    labels = natural_labels(2, 16, 16, L)
    flipped = labels.flip(-1)
    # the D of the flipped mask is the flipped D with the column offsets negated
    d = F.intra_class_positional(labels, ignore_label=0, impl=impl)
    d_flip = F.intra_class_positional(flipped, ignore_label=0, impl=impl)
    expected = d.flip(-1) * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(d_flip, expected, rtol=1e-5, atol=1e-5)
    # the layer recomputes it: its output on the flipped input matches the published formula with
    # the correctly flipped D (the published pipeline's stored D would have the wrong column sign)
    compare(layer, sd, torch.randn(2, 6, 8, 8), flipped, dist=expected)


def test_ignore_label_option():
    labels = natural_labels(1, 12, 12, 3, classes_per_image=3)
    layer = CLADE(4, 3, positional=True, ignore_label=None)
    with torch.no_grad():
        layer.class_specified_affine.dist_conv_w.weight.fill_(1.0)
    d_all = F.intra_class_positional(labels)
    d_zero = F.intra_class_positional(labels, ignore_label=0)
    assert torch.all(d_zero[:, :, labels[0] == 0] == 0)
    sg, _ = layer.positional_scales(labels, (12, 12), torch.float32)
    torch.testing.assert_close(sg, 1 + d_all.sum(1))


def test_errors_name_the_argument():
    layer = CLADE(4, L)
    x = torch.randn(2, 4, 8, 8)
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        layer(x, torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="positional_map"):
        layer(x, torch.zeros(2, 8, 8, dtype=torch.long), positional_map=torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="norm"):
        CLADE(4, L, norm="group")
    assert semnorm.CLADE is CLADE


def test_modulation_dense_view():
    layer, sd = build(5, positional=True)
    labels = natural_labels(2, 16, 16, L)
    gamma, beta = layer.modulation(labels, (8, 8))
    arg = TF.interpolate(onehot(labels, L), size=(8, 8), mode="nearest").argmax(1)
    d = TF.interpolate(F.intra_class_positional(labels, 0), size=(8, 8), mode="nearest")
    aff = layer.class_specified_affine
    torch.testing.assert_close(gamma, TF.embedding(arg, aff.weight).permute(0, 3, 1, 2) * (1 + aff.dist_conv_w(d)))
    torch.testing.assert_close(beta, TF.embedding(arg, aff.bias).permute(0, 3, 1, 2) * (1 + aff.dist_conv_b(d)))


@pytest.mark.parametrize("impl", IMPLS)
def test_label_out_of_range_raises(impl):
    layer, _ = build(4, impl=impl)
    with pytest.raises(IndexError):
        layer(torch.randn(2, 4, 4, 4), torch.full((2, 4, 4), L))
