"""SC-GAN generator: tiny forward/backward, fused vs reference layers, published names, counts, loading."""

import pytest
import torch
import torch.nn.functional as F

from semnorm.models.checkpoint import load_published
from semnorm.models.losses import semantic_vector_loss
from semnorm.models import set_impl
from semnorm.models.scgan import SCGANConfig, SCGANOutput, build_scgan_generator
from semnorm.nn import SCC, SCN, SPADE
from semnorm.testing import natural_labels

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**kw):
    return build_scgan_generator("custom", **kw)


def _labels(n=2, size=32, classes=5, seed=0):
    return natural_labels(n, size, size, classes, classes_per_image=4, generator=torch.Generator().manual_seed(seed))


def test_tiny_forward_backward():
    g = _tiny()
    labels = _labels()
    out = g(labels, return_aux=True)
    assert isinstance(out, SCGANOutput)
    assert out.image.shape == (2, 3, 32, 32) and out.aux_image.shape == (2, 3, 32, 32)
    assert out.image.abs().max() <= 1 and out.aux_image.abs().max() <= 1
    assert [tuple(v.shape[1:]) for v in out.conv_vectors] == [(3, 2 ** k, 2 ** k) for k in range(6)]
    assert [v.shape[1] for v in out.norm_vectors] == [4] * 6
    torch.testing.assert_close(out.conv_vectors[3].sum(1), torch.ones(2, 8, 8))
    (out.image.square().mean() + out.aux_image.abs().mean()).backward()
    no_grad = [n for n, p in g.named_parameters() if p.grad is None]
    assert no_grad == [], no_grad
    assert g(labels).shape == out.image.shape


def test_fused_and_reference_layers_agree():
    g = _tiny()
    ref = _tiny()
    ref.load_state_dict(g.state_dict())
    set_impl(ref, "reference")
    layers = [m for m in ref.modules() if isinstance(m, (SCN, SCC, SPADE))]
    assert len(layers) == 7 * 4 + 4 and all(m.impl == "reference" for m in layers)  # 4 learned shortcuts
    labels = _labels(seed=1)
    for mode in ("train", "eval"):
        g.train(mode == "train")
        ref.train(mode == "train")
        a, b = g(labels), ref(labels)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="impl must be"):
        set_impl(g, "cuda")


def test_onehot_input_equals_integer_labels_and_edges():
    g = _tiny(edge=True).eval()
    labels = _labels(seed=2)
    inst = torch.randint(0, 3, (2, 32, 32))
    from semnorm.nn._inputs import instance_edges
    edge = instance_edges(inst)
    onehot = torch.cat([F.one_hot(labels, 5).permute(0, 3, 1, 2).float(), edge], 1)
    a = g(labels, edge=edge)
    torch.testing.assert_close(a, g(labels, instance=inst))
    torch.testing.assert_close(a, g(onehot))
    with pytest.raises(ValueError, match="instance-edge"):
        g(labels)
    with pytest.raises(ValueError, match="32x32"):
        g(_labels(size=16), edge=edge[:, :, :16, :16])


def test_svg_label_pyramid_is_block_average():
    g = _tiny()
    seg = F.one_hot(_labels(seed=3), 5).permute(0, 3, 1, 2).float()
    pyr = g.pyramid_spaital_routing.label_pyramid(seg)
    assert [p.shape[-1] for p in pyr] == [1, 2, 4, 8, 16, 32]
    for k, level in enumerate(pyr):
        torch.testing.assert_close(level, F.avg_pool2d(seg, 2 ** (5 - k)) if k < 5 else seg)


def _expected_tiny_keys(cfg: SCGANConfig):
    """Published names of the tiny SC-GAN generator (ngf 2 trunk: 32, 32, 32, 16, 8, 4, 2 channels)."""
    keys = {"fc.weight", "fc.bias", "conv_img.weight", "conv_img.bias"}
    sn = ("weight_orig", "weight_u", "weight_v", "bias")
    svg = "pyramid_spaital_routing."
    keys |= {svg + f"labelDec1.{i}.{s}" for i in (0, 2) for s in sn}
    keys |= {svg + f"labelDec{k}.{i}.{s}" for k in range(2, 7) for i in (1, 3) for s in sn}
    keys |= {svg + f"toRGB.{i}.{s}" for i in (0, 2) for s in ("weight", "bias")}
    bn = ("running_mean", "running_var", "num_batches_tracked")
    for blk, shortcut in [("head_0", False), ("G_middle_0", False), ("G_middle_1", False), ("up_0", True),
                          ("up_1", True), ("up_2", True), ("up_3", True)]:
        for c in ("conv_0", "conv_1"):
            keys |= {f"{blk}.{c}.conv_bases.{k}.{s}" for k in range(cfg.num_experts_conv) for s in sn[:3]}
        for nrm in ("norm_0", "norm_1"):
            keys |= {f"{blk}.{nrm}.affine_params_groups"} | {f"{blk}.{nrm}.param_free_norm.{b}" for b in bn}
        if shortcut:
            keys |= {f"{blk}.conv_s.{s}" for s in sn}
            keys |= {f"{blk}.norm_s.param_free_norm.{b}" for b in bn}
            keys |= {f"{blk}.norm_s.{m}.{s}" for m in ("mlp_shared.0", "mlp_gamma", "mlp_beta") for s in ("weight", "bias")}
    return keys


def test_published_key_names_tiny():
    g = _tiny()
    assert set(g.state_dict()) == _expected_tiny_keys(g.cfg)


def test_full_size_ade20k_names_shapes_and_count():
    with torch.device("meta"):
        g = build_scgan_generator("ade20k")
    sd = g.state_dict()
    shapes = {
        "fc.weight": (512, 151, 3, 3),
        "pyramid_spaital_routing.labelDec1.0.weight_orig": (512, 151, 3, 3),
        "pyramid_spaital_routing.labelDec2.1.weight_orig": (256, 512 + 151, 3, 3),
        "pyramid_spaital_routing.labelDec6.3.weight_orig": (32, 32, 3, 3),
        "pyramid_spaital_routing.toRGB.0.weight": (16, 32, 3, 3),
        "pyramid_spaital_routing.toRGB.2.weight": (3, 16, 3, 3),
        "head_0.conv_0.conv_bases.2.weight_orig": (512, 512, 3, 3),
        "head_0.norm_0.affine_params_groups": (4, 1024),
        "head_0.norm_0.param_free_norm.running_mean": (512,),
        "up_0.conv_s.weight_orig": (256, 512, 3, 3),
        "up_0.conv_s.bias": (256,),
        "up_0.norm_s.mlp_shared.0.weight": (128, 151, 3, 3),
        "up_3.conv_1.conv_bases.0.weight_orig": (32, 32, 3, 3),
        "conv_img.weight": (3, 32, 3, 3),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    assert "head_0.conv_s.weight_orig" not in sd and "pyramid_spaital_routing.labelDec7.1.weight_orig" not in sd
    n = sum(p.numel() for p in g.parameters())
    # COMPAT: 60.9 M in the published code (the paper says 66.2 M; see README)
    assert n == 60_854_662
    assert abs(n / 60.9e6 - 1) < 0.001


def test_full_size_presets_on_meta():
    counts = {}
    for preset in ("coco_stuff", "cityscapes", "celebamask_hq"):
        with torch.device("meta"):
            g = build_scgan_generator(preset)
        counts[preset] = sum(p.numel() for p in g.parameters())
    assert counts == {"coco_stuff": 61_462_918, "cityscapes": 58_763_846, "celebamask_hq": 58_421_638}
    with torch.device("meta"):
        g = build_scgan_generator("cityscapes")
    assert g.cfg.output_size == (256, 512) and hasattr(g.pyramid_spaital_routing, "labelDec7")
    assert g.pyramid_spaital_routing.labelDec1[0].in_channels == 36  # 35 labels + instance edge
    assert build_scgan_generator("coco_stuff", ngf=1, nff=1, nrf=2).cfg.temperature == 0.5


def test_config_errors():
    with pytest.raises(TypeError, match="valid names.*label_nc"):
        build_scgan_generator("custom", n_experts=3)
    with pytest.raises(ValueError, match="preset must be one of"):
        build_scgan_generator("imagenet")
    with pytest.raises(ValueError, match="'most'"):
        SCGANConfig(num_upsampling_layers="most")
    with pytest.raises(ValueError, match="too small"):
        SCGANConfig(crop_size=16)
    with pytest.raises(ValueError, match="norm must be"):
        SCGANConfig(norm="group")


def test_load_published_checkpoint_strict(tmp_path):
    g = _tiny()
    g.eval()
    own = g.state_dict()
    gen = torch.Generator().manual_seed(5)
    sd = {k: (torch.randn(own[k].shape, generator=gen) * 0.05 if own[k].is_floating_point() else own[k].clone())
          for k in sorted(_expected_tiny_keys(g.cfg))}
    for k in sd:
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 0.5
    torch.save(sd, tmp_path / "latest_net_G.pth")
    report = load_published(g, tmp_path / "latest_net_G.pth")
    assert report.missing_keys == [] and report.unexpected_keys == []
    torch.testing.assert_close(g.head_0.norm_0.affine_params_groups, sd["head_0.norm_0.affine_params_groups"])
    torch.testing.assert_close(g.pyramid_spaital_routing.labelDec1[0].weight_orig,
                               sd["pyramid_spaital_routing.labelDec1.0.weight_orig"])
    other = _tiny().eval()
    load_published(other, sd)
    labels = _labels(seed=4)
    torch.testing.assert_close(g(labels), other(labels))


def test_few_steps_reduce_reconstruction_loss():
    """A few Adam steps on the L1 to a per-class colour image plus the semantic vector loss."""
    torch.manual_seed(0)
    g = _tiny()
    labels = _labels(n=2, seed=6)
    palette = torch.rand(5, 3, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    target = palette[labels].permute(0, 3, 1, 2)
    opt = torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.9, 0.999))
    losses = []
    for _ in range(6):
        out = g(labels, return_aux=True)
        loss = (out.image - target).abs().mean() + 2.0 * semantic_vector_loss(out.aux_image, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-2:]) < 0.97 * losses[0], losses


@pytest.mark.slow
def test_compile_tiny_scgan():
    g = _tiny().eval()
    labels = _labels(seed=7)
    torch.testing.assert_close(torch.compile(g)(labels), g(labels), rtol=1e-4, atol=1e-5)
