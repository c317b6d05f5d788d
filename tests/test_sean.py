"""SEAN layer: published names and math (the published ``ACE`` written eagerly here), paths, modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import semnorm
from semnorm.nn import SEAN, region_style_codes
from semnorm.testing import natural_labels

from optest import needs_ext

IMPLS = [pytest.param(None, marks=needs_ext, id="native"), pytest.param("reference", id="reference")]


# ----------------------------------------------------------------------------------------------
# An independent eager implementation of the published layer (ACE + its inner SPADE): one-hot map,
# F.interpolate nearest, per-(sample, class) loop filling a dense style map by masked assignment,
# dense convolutions, noise added before F.batch_norm / F.instance_norm, sigmoid blend.


class EagerSpade(nn.Module):
    def __init__(self, c, label_nc, hidden=128, norm="batch"):
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(c, affine=False) if norm == "instance" else nn.BatchNorm2d(c, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, c, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, c, 3, padding=1)

    def forward(self, segmap):
        actv = self.mlp_shared(segmap)
        return self.mlp_gamma(actv), self.mlp_beta(actv)


class EagerACE(nn.Module):
    def __init__(self, c, label_nc, style_dim=512, use_rgb=True, norm="batch"):
        super().__init__()
        self.norm, self.use_rgb, self.style_length = norm, use_rgb, style_dim
        self.Spade = EagerSpade(c, label_nc, norm=norm)
        self.blending_gamma = nn.Parameter(torch.zeros(1))
        self.blending_beta = nn.Parameter(torch.zeros(1))
        self.noise_var = nn.Parameter(torch.zeros(c))
        self.param_free_norm = nn.InstanceNorm2d(c, affine=False) if norm == "instance" else nn.BatchNorm2d(c, affine=False)
        if use_rgb:
            for j in range(label_nc):
                setattr(self, f"fc_mu{j}", nn.Linear(style_dim, style_dim))
            self.conv_gamma = nn.Conv2d(style_dim, c, 3, padding=1)
            self.conv_beta = nn.Conv2d(style_dim, c, 3, padding=1)

    def forward(self, x, segmap, style_codes, z):
        # published: (randn(N, W, H, 1) * noise_var).transpose(1, 3); here z (N, H, W) is given
        added_noise = z[:, None] * self.noise_var[None, :, None, None]
        normalized = self.param_free_norm(x + added_noise)
        segmap = TF.interpolate(segmap, size=x.shape[2:], mode="nearest")
        gamma_spade, beta_spade = self.Spade(segmap)
        if not self.use_rgb:
            return normalized * (1 + gamma_spade) + beta_spade
        b, _, h, w = normalized.shape
        middle_avg = torch.zeros((b, self.style_length, h, w), dtype=x.dtype)
        for i in range(b):
            for j in range(segmap.shape[1]):
                mask = segmap.bool()[i, j]
                area = int(mask.sum())
                if area > 0:
                    mu = TF.relu(getattr(self, f"fc_mu{j}")(style_codes[i][j]))
                    middle_avg[i].masked_scatter_(mask, mu.reshape(-1, 1).expand(-1, area))
        gamma_avg = self.conv_gamma(middle_avg)
        beta_avg = self.conv_beta(middle_avg)
        a_g = torch.sigmoid(self.blending_gamma)
        a_b = torch.sigmoid(self.blending_beta)
        gamma = a_g * gamma_avg + (1 - a_g) * gamma_spade
        beta = a_b * beta_avg + (1 - a_b) * beta_spade
        return normalized * (1 + gamma) + beta


def published_state(c, label_nc, style_dim, use_rgb=True, dtype=torch.float64):
    """A state dict with the published names and shapes, random values (nonzero blend and noise)."""
    g = lambda *s: (torch.randn(*s, dtype=torch.float64) * 0.2).to(dtype)  # noqa: E731
    sd = {
        "blending_gamma": g(1) * 5, "blending_beta": g(1) * 5, "noise_var": g(c) * 3,
        "param_free_norm.running_mean": g(c), "param_free_norm.running_var": torch.rand(c, dtype=dtype) + 0.5,
        "param_free_norm.num_batches_tracked": torch.tensor(7),
        "Spade.param_free_norm.running_mean": torch.zeros(c, dtype=dtype),
        "Spade.param_free_norm.running_var": torch.ones(c, dtype=dtype),
        "Spade.param_free_norm.num_batches_tracked": torch.tensor(0),
        "Spade.mlp_shared.0.weight": g(128, label_nc, 3, 3), "Spade.mlp_shared.0.bias": g(128),
        "Spade.mlp_gamma.weight": g(c, 128, 3, 3) * 0.3, "Spade.mlp_gamma.bias": g(c),
        "Spade.mlp_beta.weight": g(c, 128, 3, 3) * 0.3, "Spade.mlp_beta.bias": g(c),
    }
    if use_rgb:
        for j in range(label_nc):
            sd[f"fc_mu{j}.weight"] = g(style_dim, style_dim)
            sd[f"fc_mu{j}.bias"] = g(style_dim)
        sd["conv_gamma.weight"] = g(c, style_dim, 3, 3) * 0.3
        sd["conv_gamma.bias"] = g(c)
        sd["conv_beta.weight"] = g(c, style_dim, 3, 3) * 0.3
        sd["conv_beta.bias"] = g(c)
    return sd


def pair(c, label_nc, style_dim=16, use_style=True, norm="batch", impl=None, dtype=torch.float64):
    """(semnorm SEAN, eager published ACE) holding the same published state dict (loaded strict)."""
    sd = published_state(c, label_nc, style_dim, use_style, dtype)
    ours = SEAN(c, label_nc, style_dim, norm=norm, use_style=use_style, impl=impl).to(dtype)
    ref = EagerACE(c, label_nc, style_dim, use_rgb=use_style, norm=norm).to(dtype)
    if norm == "instance":  # InstanceNorm2d(affine=False) has no buffers
        sd = {k: v for k, v in sd.items() if "param_free_norm." not in k}
    ours.load_state_dict(sd, strict=True)
    ref.load_state_dict(sd, strict=True)
    return ours, ref


def onehot(labels, num_classes, dtype=torch.float64):
    return TF.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).to(dtype)


def run_both(ours, ref, x, labels, style, z, label_nc):
    """Forward + backward of both layers with one upstream gradient; returns outputs and gradients."""
    results = []
    for layer, lab in ((ours, labels), (ref, onehot(labels, label_nc, x.dtype))):
        xi = x.detach().clone().requires_grad_(True)
        si = style.detach().clone().requires_grad_(True) if style is not None else None
        layer.zero_grad(set_to_none=True)
        y = layer(xi, lab, si, z) if layer is ref else layer(xi, lab, si, noise=z)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(y.dtype)
        y.backward(dy)
        grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in layer.named_parameters()}
        results.append((y, xi.grad, si.grad if si is not None else None, grads))
    return results


def check_same(ours, ref, x, labels, style, z, label_nc, rtol=1e-7, atol=1e-8):
    (y, dx, ds, g), (ry, rdx, rds, rg) = run_both(ours, ref, x, labels, style, z, label_nc)
    torch.testing.assert_close(y, ry, rtol=rtol, atol=atol)
    torch.testing.assert_close(dx, rdx, rtol=rtol, atol=atol)
    if style is not None:
        torch.testing.assert_close(ds, rds, rtol=rtol, atol=atol)
    assert set(g) == set(rg)
    for name in g:
        torch.testing.assert_close(g[name], rg[name], rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}")
    return y, g


def inputs(n, c, h, w, label_nc, style_dim, lh=None, lw=None, dtype=torch.float64, classes=None):
    x = torch.randn(n, c, h, w, dtype=torch.float64).to(dtype) * 2 + 0.5
    labels = natural_labels(n, lh or h, lw or w, label_nc, classes_per_image=classes or min(4, label_nc))
    style = torch.randn(n, label_nc, style_dim, dtype=torch.float64).to(dtype)
    z = torch.randn(n, h, w, dtype=torch.float64).to(dtype)
    return x, labels, style, z


# ----------------------------------------------------------------------------------------------


def test_published_names_and_shapes():
    for use_style in (True, False):
        ours = SEAN(8, 19, 512, use_style=use_style)
        ref = EagerACE(8, 19, 512, use_rgb=use_style)
        mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        assert mine == theirs
    ours = SEAN(8, 19)
    assert ours.blending_gamma.shape == (1,) and ours.noise_var.shape == (8,)
    assert not ours.blending_gamma.any() and not ours.blending_beta.any() and not ours.noise_var.any()
    assert "fc_mu18.weight" in ours.state_dict() and "Spade.mlp_shared.0.weight" in ours.state_dict()
    assert not any(k.startswith(("fc_mu", "conv_")) for k in SEAN(8, 19, use_style=False).state_dict())
    assert "fc_mu4.bias" in SEAN(8, 5, 16).state_dict() and "fc_mu5.bias" not in SEAN(8, 5, 16).state_dict()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("label_nc", [19, 5])
def test_matches_published(impl, label_nc):
    ours, ref = pair(6, label_nc, style_dim=16, impl=impl)
    x, labels, style, z = inputs(2, 6, 10, 12, label_nc, 16, classes=label_nc)
    # the last class stands for 'unknown' (don't care) in a few pixels
    labels[0, :3, :4] = label_nc - 1
    check_same(ours, ref, x, labels, style, z, label_nc)
    # running statistics updated like BatchNorm2d (noise included in the statistics)
    torch.testing.assert_close(ours.param_free_norm.running_mean, ref.param_free_norm.running_mean)
    torch.testing.assert_close(ours.param_free_norm.running_var, ref.param_free_norm.running_var)
    assert int(ours.param_free_norm.num_batches_tracked) == int(ref.param_free_norm.num_batches_tracked)


@pytest.mark.parametrize("impl", IMPLS)
def test_absent_classes_and_other_resolution(impl):
    label_nc = 7
    ours, ref = pair(5, label_nc, style_dim=8, impl=impl)
    x, _, style, z = inputs(2, 5, 6, 10, label_nc, 8)
    labels = natural_labels(2, 17, 23, label_nc, classes_per_image=3)  # finer, odd ratio; most classes absent
    labels[labels == 2] = 0
    present = set(torch.unique(TF.interpolate(labels[:, None].double(), size=(6, 10), mode="nearest").long()).tolist())
    _, g = check_same(ours, ref, x, labels, style, z, label_nc)
    for j in set(range(label_nc)) - present:
        assert float(g[f"fc_mu{j}.weight"].abs().sum()) == 0
    # coarser labels than x
    x, labels, style, z = inputs(2, 5, 8, 12, label_nc, 8, lh=4, lw=6)
    check_same(ours, ref, x, labels, style, z, label_nc)


@pytest.mark.parametrize("impl", IMPLS)
def test_mask_only(impl):
    ours, ref = pair(6, 5, style_dim=8, use_style=False, impl=impl)
    x, labels, _, z = inputs(2, 6, 8, 8, 5, 8)
    check_same(ours, ref, x, labels, None, z, 5)
    # style codes are ignored without the style branch
    torch.testing.assert_close(ours(x, labels, torch.randn(2, 5, 8, dtype=x.dtype), noise=z), ours(x, labels, noise=z))


@pytest.mark.parametrize("norm", ["instance", "syncbatch"])
def test_norm_variants(norm):
    ours, ref = pair(4, 5, style_dim=8, norm=norm)
    x, labels, style, z = inputs(2, 4, 8, 6, 5, 8)
    check_same(ours, ref, x, labels, style, z, 5)


def test_eval_running_stats():
    ours, ref = pair(4, 5, style_dim=8)
    x, labels, style, z = inputs(3, 4, 8, 8, 5, 8)
    check_same(ours, ref, x, labels, style, z, 5)
    ours.eval(), ref.eval()
    x, labels, style, z = inputs(1, 4, 8, 8, 5, 8)
    check_same(ours, ref, x, labels, style, z, 5)


def test_fused_matches_reference_path():
    if not semnorm.has_extension:
        pytest.skip("no extension")
    layer = SEAN(8, 6, 16)
    layer.load_state_dict(published_state(8, 6, 16, dtype=torch.float32))
    x, labels, style, z = inputs(2, 8, 12, 9, 6, 16, dtype=torch.float32, lh=24, lw=18)
    outs = []
    for impl in (None, "reference"):
        layer.impl = impl
        assert layer.Spade.impl == impl
        xi, si = x.clone().requires_grad_(True), style.clone().requires_grad_(True)
        layer.zero_grad()
        y = layer(xi, labels, si, noise=z)
        y.backward(torch.ones_like(y))
        outs.append([y, xi.grad, si.grad] + [p.grad.clone() for p in layer.parameters()])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_onehot_input_equals_integer_labels():
    layer = SEAN(4, 5, 8)
    x, labels, style, z = inputs(2, 4, 8, 8, 5, 8, dtype=torch.float32)
    torch.testing.assert_close(layer(x, labels, style, noise=z), layer(x, onehot(labels, 5, torch.float32), style, noise=z))


def test_drawn_noise_matches_published_draw():
    ours, ref = pair(4, 5, style_dim=8, dtype=torch.float32)
    x, labels, style, _ = inputs(2, 4, 6, 9, 5, 8, dtype=torch.float32)
    torch.manual_seed(123)
    y = ours(x, labels, style)
    torch.manual_seed(123)
    r = torch.randn(2, 9, 6, 1)  # the published draw: (N, W, H, 1), transposed to (N, C, H, W)
    added = (r * ref.noise_var).transpose(1, 3)
    z = added[:, 0] / ref.noise_var[0]
    torch.testing.assert_close(z, r[..., 0].transpose(1, 2))
    yr = ref(x, onehot(labels, 5, torch.float32), style, r[..., 0].transpose(1, 2))
    torch.testing.assert_close(y, yr, rtol=1e-4, atol=1e-4)
    # reproducible under torch's RNG, and actually random
    torch.manual_seed(5)
    a = ours(x, labels, style)
    torch.manual_seed(5)
    torch.testing.assert_close(ours(x, labels, style), a)
    assert not torch.equal(ours(x, labels, style), a)
    # noise=False: no noise even with a nonzero noise_var
    quiet = SEAN(4, 5, 8, noise=False)
    quiet.load_state_dict(ours.state_dict())
    torch.testing.assert_close(quiet(x, labels, style), ours(x, labels, style, noise=torch.zeros(2, 6, 9)))


@pytest.mark.parametrize("impl", IMPLS)
def test_style_edit_changes_only_its_region(impl):
    label_nc = 6
    layer = SEAN(4, label_nc, 8, impl=impl).double().eval()
    layer.load_state_dict(published_state(4, label_nc, 8))
    x, labels, style, z = inputs(2, 4, 16, 16, label_nc, 8, lh=32, lw=32, classes=4)
    small = TF.interpolate(labels[:, None].double(), size=(16, 16), mode="nearest")[:, 0].long()
    j = int(small[0, 8, 8])
    edited = style.clone()
    edited[:, j] = torch.randn(2, 8, dtype=torch.float64) * 3
    with torch.no_grad():
        y0, y1 = layer(x, labels, style, noise=z), layer(x, labels, edited, noise=z)
    in_region = (small == j).double()[:, None]
    near = TF.max_pool2d(in_region, 3, stride=1, padding=1)[:, 0].bool()  # 3x3 neighbourhood touches region j
    diff = (y0 - y1).abs().amax(1)
    assert float(diff[~near].max()) == 0.0
    assert bool((diff[small == j] > 0).all())


def test_region_style_codes():
    feats = torch.randn(2, 6, 8, 10, dtype=torch.float64)
    labels = natural_labels(2, 16, 20, 5, classes_per_image=3)
    small = TF.interpolate(labels[:, None].double(), size=(8, 10), mode="nearest")[:, 0].long()
    st = region_style_codes(feats, labels, 5)
    assert st.shape == (2, 5, 6)
    for n in range(2):
        for j in range(5):
            mask = small[n] == j
            want = feats[n][:, mask].mean(1) if mask.any() else torch.zeros(6, dtype=torch.float64)
            torch.testing.assert_close(st[n, j], want)
    torch.testing.assert_close(region_style_codes(feats, onehot(labels, 5), 5), st)


def test_batch_norm_single_value_raises():
    layer = SEAN(4, 5, 8)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(torch.randn(1, 4, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long), torch.randn(1, 5, 8))


def test_argument_errors():
    layer = SEAN(4, 5, 8)
    x, labels, style, _ = inputs(2, 4, 6, 6, 5, 8, dtype=torch.float32)
    with pytest.raises(ValueError, match="style codes"):
        layer(x, labels)
    with pytest.raises(ValueError, match="style must have shape"):
        layer(x, labels, style[:, :4])
    with pytest.raises(ValueError, match="batch size"):
        layer(x, labels, style[:1])
    with pytest.raises(ValueError, match="noise must have shape"):
        layer(x, labels, style, noise=torch.randn(2, 6, 5))
    assert int(layer.param_free_norm.num_batches_tracked) == 0  # bad style caught before the norm ran
    with pytest.raises(ValueError, match=r"x must have shape \(N, 4"):
        layer(torch.randn(2, 3, 6, 6), labels, style)
    with pytest.raises(ValueError, match="label_nc"):
        SEAN(4, 0)
    with pytest.raises(ValueError, match="norm must be one of"):
        SEAN(4, 5, norm="layer")


def test_channels_last_and_autocast():
    layer = SEAN(8, 5, 16)
    layer.load_state_dict(published_state(8, 5, 16, dtype=torch.float32))
    x, labels, style, z = inputs(2, 8, 8, 8, 5, 16, dtype=torch.float32)
    y = layer(x, labels, style, noise=z)
    xc = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    yc = layer(xc, labels, style, noise=z)
    torch.testing.assert_close(yc, y, rtol=1e-5, atol=1e-5)
    yc.sum().backward()
    assert xc.grad.shape == x.shape
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya = layer(x, labels, style, noise=z)
    assert ya.dtype == x.dtype
    torch.testing.assert_close(ya.float(), y, rtol=0.1, atol=0.15)


def test_compile_fullgraph():
    layer = SEAN(4, 5, 8)
    layer.load_state_dict(published_state(4, 5, 8, dtype=torch.float32))
    x, labels, style, z = inputs(2, 4, 6, 6, 5, 8, dtype=torch.float32)
    # aot_eager traces forward and backward through the custom ops' fake kernels and autograd in one
    # graph (fullgraph); inductor codegen would add ~40 s on 2 cores and tests nothing of this layer.
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    outs = []
    for fn in (layer, compiled):
        xi = x.clone().requires_grad_(True)
        layer.zero_grad()
        y = fn(xi, labels, style, noise=z)
        y.square().sum().backward()
        outs.append((y, xi.grad, layer.conv_gamma.weight.grad.clone(), layer.fc_mu1.weight.grad.clone()))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
