"""Discriminators (multi-scale PatchGAN of SPADE and SEAN, SC-GAN's FPSE) and published-checkpoint loading."""

import pytest
import torch
import torch.nn.functional as F

from semnorm.models.checkpoint import load_published
from semnorm.models.discriminators import (
    FPSEDiscriminator,
    MultiscaleDiscriminator,
    build_discriminator,
    semantic_onehot,
)
from semnorm.testing import natural_labels

pytestmark = pytest.mark.usefixtures("one_thread")


def _out(size, stride, k=4, pad=2):
    return (size + 2 * pad - k) // stride + 1


def _expected_patchgan_keys(n_layers, num_d=2):
    keys = {}
    for d in range(num_d):
        p = f"discriminator_{d}."
        keys[p + "model0.0.weight"] = keys[p + "model0.0.bias"] = None
        for i in range(1, n_layers):
            for s in ("weight_orig", "weight_u", "weight_v"):
                keys[p + f"model{i}.0.0.{s}"] = None
        keys[p + f"model{n_layers}.0.weight"] = keys[p + f"model{n_layers}.0.bias"] = None
    return set(keys)


def test_spade_patchgan_keys_and_shapes_full_size():
    with torch.device("meta"):
        d = build_discriminator("spade", "ade20k")
    sd = d.state_dict()
    assert set(sd) == _expected_patchgan_keys(4)
    # ADE20K: 151 one-hot channels + 3 image channels
    assert tuple(sd["discriminator_0.model0.0.weight"].shape) == (64, 154, 4, 4)
    assert tuple(sd["discriminator_0.model1.0.0.weight_orig"].shape) == (128, 64, 4, 4)
    assert tuple(sd["discriminator_0.model1.0.0.weight_u"].shape) == (128,)
    assert tuple(sd["discriminator_0.model1.0.0.weight_v"].shape) == (64 * 16,)
    assert tuple(sd["discriminator_1.model3.0.0.weight_orig"].shape) == (512, 256, 4, 4)
    assert tuple(sd["discriminator_1.model4.0.weight"].shape) == (1, 512, 4, 4)
    n = sum(p.numel() for p in d.parameters())
    per_d = 154 * 64 * 16 + 64 + 64 * 128 * 16 + 128 * 256 * 16 + 256 * 512 * 16 + 512 * 16 + 1
    assert n == 2 * per_d
    # COCO-Stuff: 182 + dontcare + edge; Cityscapes 35 + edge
    with torch.device("meta"):
        assert build_discriminator("clade", "coco_stuff").discriminator_0.model0[0].in_channels == 187
        assert build_discriminator("mixed", "cityscapes").discriminator_0.model0[0].in_channels == 39


def test_sean_patchgan_three_hidden_layers_all_stride_two():
    with torch.device("meta"):
        d = build_discriminator("sean", "celebamask_hq")
    assert set(d.state_dict()) == _expected_patchgan_keys(3)
    assert d.discriminator_0.model0[0].in_channels == 22
    assert [d.discriminator_0.get_submodule(f"model{i}.0.0").stride for i in (1, 2)] == [(2, 2), (2, 2)]


@pytest.mark.parametrize("name,n_layers,last_stride", [("spade", 4, 1), ("sean", 3, 2)])
def test_patchgan_forward_backward_tiny(name, n_layers, last_stride):
    d = build_discriminator(name, "custom")
    img = torch.randn(2, 3, 32, 32, requires_grad=True)
    labels = natural_labels(2, 32, 32, 5)
    out = d(img, labels)
    assert len(out) == 2 and all(len(s) == n_layers + 1 for s in out)
    for scale, feats in enumerate(out):
        h = 32 if scale == 0 else 16
        for i in range(n_layers):
            h = _out(h, last_stride if i == n_layers - 1 and i > 0 else 2)
            assert feats[i].shape[-1] == h
        assert feats[-1].shape[1] == 1 and feats[-1].shape[-1] == _out(h, 1)
    sum(s[-1].mean() for s in out).backward()
    assert img.grad is not None and all(p.grad is not None for p in d.parameters())
    # integer labels == the published one-hot input
    onehot = F.one_hot(labels, 5).permute(0, 3, 1, 2).float()
    d.eval()
    for a, b in zip(d(img, labels), d(img, onehot)):
        torch.testing.assert_close(a[-1], b[-1])


def test_patchgan_input_and_scale_pyramid():
    d = build_discriminator("spade", "custom", edge=True)
    img = torch.randn(1, 3, 16, 16)
    labels = torch.randint(0, 5, (1, 16, 16))
    inst = torch.randint(0, 3, (1, 16, 16))
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for m in (d.discriminator_0, d.discriminator_1)]
    d(img, labels, instance=inst)
    for h in hooks:
        h.remove()
    from semnorm.nn._inputs import instance_edges
    want = torch.cat([F.one_hot(labels, 5).permute(0, 3, 1, 2).float(), instance_edges(inst), img], 1)
    torch.testing.assert_close(seen[0], want)  # labels first, then edge, then image, as published
    torch.testing.assert_close(seen[1], F.avg_pool2d(want, 3, 2, 1, count_include_pad=False))
    with pytest.raises(ValueError, match="instance-edge channel"):
        d(img, labels)
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        d(img, labels + 5)
    d2 = build_discriminator("spade", "custom", intermediate=False)
    out = d2(img, labels)
    assert [len(s) for s in out] == [1, 1] and out[0][0].shape[1] == 1


def test_semantic_onehot_errors():
    with pytest.raises(ValueError, match="6 channels"):
        semantic_onehot(torch.zeros(1, 5, 4, 4), 5, edge=True)
    with pytest.raises(ValueError, match="integer"):
        semantic_onehot(torch.zeros(1, 4, 4), 5)


def _fpse_keys():
    keys = set()
    for name in [f"enc{i}" for i in range(1, 6)] + [f"lat{i}" for i in range(2, 6)] + [f"final{i}" for i in range(2, 5)]:
        keys |= {f"{name}.0.0.weight_orig", f"{name}.0.0.weight_u", f"{name}.0.0.weight_v"}
    for name in ("tf", "seg", "embedding"):
        keys |= {f"{name}.weight", f"{name}.bias"}
    return keys


def test_fpse_keys_shapes_full_size():
    with torch.device("meta"):
        d = build_discriminator("scgan", "ade20k")
    sd = d.state_dict()
    assert isinstance(d, FPSEDiscriminator) and set(sd) == _fpse_keys()
    assert tuple(sd["enc1.0.0.weight_orig"].shape) == (64, 3, 3, 3)
    assert tuple(sd["enc5.0.0.weight_orig"].shape) == (512, 512, 3, 3)
    assert tuple(sd["lat2.0.0.weight_orig"].shape) == (256, 128, 1, 1)
    assert tuple(sd["final4.0.0.weight_orig"].shape) == (128, 256, 3, 3)
    assert tuple(sd["embedding.weight"].shape) == (128, 151, 1, 1)
    assert tuple(sd["tf.weight"].shape) == (1, 128, 1, 1)
    with torch.device("meta"):
        assert build_discriminator("scgan", "coco_stuff").embedding.in_channels == 184


def test_fpse_forward_backward_and_semantic_embedding():
    d = build_discriminator("scgan", "custom")
    img = torch.randn(2, 3, 64, 64, requires_grad=True)
    labels = natural_labels(2, 64, 64, 5)
    feats, preds = d(img, labels)
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (32, 2, 2)]
    assert [tuple(p.shape[1:]) for p in preds] == [(1, 16, 16), (1, 8, 8), (1, 4, 4)]
    sum(p.mean() for p in preds).backward()
    assert img.grad is not None and all(p.grad is not None for p in d.parameters())
    # the semantics-embedding term: the score depends on the labels through `embedding` only
    d.eval()
    other = (labels + 1) % 5
    with torch.no_grad():
        assert not torch.allclose(d(img, labels)[1][0], d(img, other)[1][0])
        d.embedding.weight.zero_()
        d.embedding.bias.zero_()
        torch.testing.assert_close(d(img, labels)[1][0], d(img, other)[1][0])
        finals = {}
        hooks = [getattr(d, f"final{i}").register_forward_hook(lambda m, a, o, i=i: finals.__setitem__(i, o))
                 for i in (2, 3, 4)]
        preds0 = d(img, labels)[1]
        for h in hooks:
            h.remove()
        for i, p in zip((2, 3, 4), preds0):
            torch.testing.assert_close(p, d.tf(finals[i]))  # zero embedding: the plain patch score
    with pytest.raises(ValueError, match="multiples of 32"):
        d(torch.randn(1, 3, 48, 48), torch.zeros(1, 48, 48, dtype=torch.long))


def test_build_discriminator_errors():
    with pytest.raises(TypeError, match="valid names"):
        build_discriminator("spade", "custom", n_layer=3)
    with pytest.raises(ValueError, match="name must be one of"):
        build_discriminator("pix2pix", "custom")
    with pytest.raises(ValueError, match="preset must be one of"):
        build_discriminator("spade", "imagenet")
    assert isinstance(build_discriminator("clade_icpe", "custom"), MultiscaleDiscriminator)


def test_published_init():
    d = build_discriminator("spade", "custom")
    w = d.discriminator_0.model0[0].weight
    assert d.discriminator_0.model0[0].bias.abs().max() == 0
    fan_in, fan_out = w.shape[1] * 16, w.shape[0] * 16
    assert abs(w.std().item() - 0.02 * (2 / (fan_in + fan_out)) ** 0.5) < 0.3 * 0.02 * (2 / (fan_in + fan_out)) ** 0.5


# ---------------------------------------------------------------------------------------------
# published checkpoint loading (state dicts written with the published names)


def _published_state_dict(model, seed=0):
    """A state dict keyed by the published names, written out explicitly from the expected key list."""
    g = torch.Generator().manual_seed(seed)
    own = model.state_dict()
    return {k: torch.randn(own[k].shape, generator=g) if own[k].is_floating_point() else own[k].clone()
            for k in sorted(_expected_patchgan_keys(4))}


def test_load_published_patchgan_strict(tmp_path):
    d = build_discriminator("spade", "custom")
    sd = _published_state_dict(d)
    path = tmp_path / "latest_net_D.pth"
    torch.save(sd, path)
    report = load_published(d, path)
    assert report.missing_keys == [] and report.unexpected_keys == [] and not report.stripped_prefix
    for k, v in sd.items():
        torch.testing.assert_close(d.state_dict()[k], v)
    # a DataParallel checkpoint: the module. prefix is stripped
    torch.save({"module." + k: v for k, v in sd.items()}, path)
    assert load_published(build_discriminator("spade", "custom"), path).stripped_prefix


def test_load_published_fpse_strict(tmp_path):
    d = build_discriminator("scgan", "custom")
    own = d.state_dict()
    sd = {k: torch.randn(own[k].shape) for k in sorted(_fpse_keys())}
    torch.save(sd, tmp_path / "D.pth")
    load_published(d, tmp_path / "D.pth")
    torch.testing.assert_close(d.embedding.weight, sd["embedding.weight"])


def test_load_published_reports_mismatches(tmp_path):
    d = build_discriminator("spade", "custom")
    sd = _published_state_dict(d)
    sd["discriminator_0.model5.0.weight"] = torch.zeros(1)
    del sd["discriminator_1.model2.0.0.weight_u"]
    with pytest.raises(KeyError, match=r"(?s)missing key.*discriminator_1.model2.0.0.weight_u.*unexpected key"
                                       r".*discriminator_0.model5.0.weight"):
        load_published(d, sd)
    report = load_published(d, sd, strict=False)
    assert report.missing_keys == ["discriminator_1.model2.0.0.weight_u"]
    assert report.unexpected_keys == ["discriminator_0.model5.0.weight"]
    bad = _published_state_dict(d)
    bad["discriminator_0.model0.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(RuntimeError, match="discriminator_0.model0.0.weight"):
        load_published(d, bad)
    torch.save({"x": 1}, tmp_path / "bad.pth")
    with pytest.raises(TypeError, match="non-tensor"):
        load_published(d, tmp_path / "bad.pth")


def test_compile_tiny_patchgan():
    """torch.compile of the tiny SEAN PatchGAN (about 15 s on one CPU thread)."""
    d = build_discriminator("sean", "custom")
    d.eval()
    img, labels = torch.randn(1, 3, 16, 16), torch.randint(0, 5, (1, 16, 16))
    compiled = torch.compile(d)
    for a, b in zip(compiled(img, labels), d(img, labels)):
        torch.testing.assert_close(a[-1], b[-1], rtol=1e-4, atol=1e-5)
