"""Generators of semnorm.models: configs and presets, every generator forward and backward on the CPU,
fused vs reference paths, the published parameter names and shapes (written out here independently
from COMPAT.md), strict loading of published state dicts, full-size parameter counts and FLOPs against
the papers, the report command, torch.compile, and a few optimizer steps."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import semnorm
from semnorm.nn import CLADE, SEAN, SPADE
from semnorm.testing import natural_labels

from optest import needs_ext

from semnorm.models import (
    GENERATORS, PRESETS, CLADEGenerator, ConvEncoder, GeneratorConfig, MixedGenerator, SEANGenerator,
    SemanticResBlock, build_generator, preset_config, set_impl,
)
from semnorm.models import report

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32  # output size of the tiny test generators (the custom preset at crop_size 32)
L = PRESETS["custom"]["label_nc"] + 1  # classes incl. don't-care


#: tiny generators of every kind: (id, name, overrides)
TINY = [
    ("spade", "spade", {}),
    ("spade_vae", "spade", {"use_vae": True}),
    ("spade_edge", "spade", {"instance": True}),
    ("clade", "clade", {}),
    ("clade_edge", "clade", {"instance": True}),
    ("clade_icpe", "clade_icpe", {}),
    ("clade_icpe_edge", "clade_icpe", {"instance": True}),
    ("mixed", "mixed", {}),
    ("mixed_edge", "mixed", {"instance": True, "clade_from": 4}),
    ("sean", "sean", {}),
]
TINY_IDS = [t[0] for t in TINY]


def tiny(name: str, **overrides) -> nn.Module:
    return build_generator(name, "custom", **{"crop_size": SIZE, "vae_input_size": SIZE, **overrides})


def inputs(n: int = 2, seed: int = 0, size: int = SIZE):
    g = torch.Generator().manual_seed(seed)
    labels = natural_labels(n, size, size, L, classes_per_image=4, generator=g)
    instance = natural_labels(n, size, size, 9, classes_per_image=6, generator=g)
    image = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    return labels, instance, image


def run(model: nn.Module, labels, instance, image, **kw) -> torch.Tensor:
    """One forward of any tiny generator; returns the image."""
    if isinstance(model, SEANGenerator):
        return model(labels, image=image, **kw)
    extra = {"instance": instance} if model.config.instance else {}
    out = model(labels, **extra, **kw)
    return out[0] if isinstance(out, tuple) else out


# ----------------------------------------------------------------------------------------------
# configs and presets


def test_presets_published_values():
    ade, coco, city, celeb = (preset_config(p) for p in ("ade20k", "coco_stuff", "cityscapes", "celebamask_hq"))
    assert (ade.num_classes, ade.semantic_nc, ade.output_size, ade.latent_size) == (151, 151, (256, 256), (8, 8))
    assert (coco.num_classes, coco.semantic_nc, coco.output_size) == (183, 184, (256, 256))
    assert (city.num_classes, city.semantic_nc, city.output_size, city.latent_size) == (35, 36, (256, 512), (4, 8))
    assert city.num_upsampling_layers == "more" and ade.num_upsampling_layers == "normal"
    assert (celeb.num_classes, celeb.output_size) == (19, (256, 256))
    assert ade.norm == "syncbatch" and ade.spectral and ade.ngf == 64 and ade.hidden == 128 and ade.z_dim == 256
    most = preset_config("ade20k", num_upsampling_layers="most")
    assert most.block_names[-1] == "up_4" and most.latent_size == (2, 2) and most.output_size == (256, 256)
    assert city.block_sizes() == {"head_0": (4, 8), "G_middle_0": (8, 16), "G_middle_1": (16, 32), "up_0": (32, 64),
                                  "up_1": (64, 128), "up_2": (128, 256), "up_3": (256, 512)}


def test_unknown_override_lists_valid_names():
    with pytest.raises(TypeError, match="unknown generator option.*'ngff'.*valid names: label_nc"):
        build_generator("spade", "custom", ngff=3)
    with pytest.raises(TypeError, match="valid names"):
        preset_config("ade20k", bogus=1)
    with pytest.raises(ValueError, match="unknown generator 'pix2pixhd'"):
        build_generator("pix2pixhd", "custom")
    with pytest.raises(ValueError, match="unknown preset 'ade'"):
        build_generator("spade", "ade")


@pytest.mark.parametrize("bad, match", [
    (dict(num_upsampling_layers="many"), "num_upsampling_layers"),
    (dict(norm="group"), "norm must be one of"),
    (dict(layer="adain"), "layer must be one of"),
    (dict(clade_from=9), "clade_from must be a block number"),
    (dict(layer="clade", clade_from=3), "needs layer='spade'"),
    (dict(crop_size=100), "multiple of 2\\^5"),
    (dict(ngf=0), "ngf must be a positive int"),
    (dict(layer="sean", instance=True), "no instance-edge input"),
])
def test_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        preset_config("custom", **bad)


def test_build_generator_checks_names_and_layers():
    with pytest.raises(ValueError, match="uses layer='clade'"):
        build_generator("clade", "custom", layer="spade")
    with pytest.raises(ValueError, match="clade_from is an option of the 'mixed' generator"):
        build_generator("clade", "custom", clade_from=3)
    assert isinstance(tiny("clade"), CLADEGenerator) and isinstance(tiny("mixed"), MixedGenerator)
    assert build_generator("mixed", "cityscapes", ngf=4).config.clade_from == 3  # CLADE Table 6
    assert tiny("mixed").config.clade_from == 6
    assert set(GENERATORS) == {"spade", "clade", "clade_icpe", "sean", "scgan", "mixed"}


def test_mixed_transition():
    g = tiny("mixed", clade_from=4)
    kinds = {name: type(getattr(g, name).norm_0).__name__ for name in g.config.block_names}
    assert kinds == {"head_0": "SPADE", "G_middle_0": "SPADE", "G_middle_1": "SPADE", "up_0": "CLADE",
                     "up_1": "CLADE", "up_2": "CLADE", "up_3": "CLADE"}
    g8 = tiny("mixed", clade_from=8)  # 8 = no CLADE block: the SPADE generator
    assert all(isinstance(getattr(g8, n).norm_0, SPADE) for n in g8.config.block_names)


# ----------------------------------------------------------------------------------------------
# forward and backward


@pytest.mark.parametrize("kind, name, overrides", TINY, ids=TINY_IDS)
def test_forward_backward(kind, name, overrides):
    torch.manual_seed(0)
    model = tiny(name, **overrides)
    labels, instance, image = inputs()
    out = run(model, labels, instance, image)
    assert out.shape == (2, 3, SIZE, SIZE) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() <= 1
    (out ** 2).mean().backward()
    for block in model.config.block_names:
        for conv in ("conv_0", "conv_1"):
            grad = getattr(getattr(model, block), conv).weight_orig.grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, (block, conv)
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    if kind.startswith("clade"):
        bank = model.up_3.norm_0.class_specified_affine.weight.grad
        present = torch.unique(labels)
        assert bank[present].abs().sum() > 0
    if "icpe" in kind:
        assert model.up_3.norm_0.class_specified_affine.dist_conv_w.weight.grad.abs().sum() > 0
    if kind.endswith("edge") and kind != "spade_edge":
        assert model.up_3.norm_1.inst_conv.weight.grad.abs().sum() > 0
    if kind == "sean":
        assert model.Zencoder.model[14].weight.grad.abs().sum() > 0
        assert model.head_0.ace_0.fc_mu0.weight.grad is not None


def test_vae_encode_and_sample():
    torch.manual_seed(0)
    model = tiny("spade", use_vae=True)
    labels, _, image = inputs()
    out, mu, logvar = model(labels, image=image)
    assert out.shape == (2, 3, SIZE, SIZE) and mu.shape == logvar.shape == (2, model.config.z_dim)
    (out.mean() + mu.pow(2).mean() + logvar.exp().mean()).backward()
    assert model.encoder.layer1[0].weight_orig.grad.abs().sum() > 0
    sampled, mu2, logvar2 = model(labels)
    assert sampled.shape == out.shape and mu2 is None and logvar2 is None
    z = torch.randn(2, model.config.z_dim)
    model.eval()  # (training mode advances spectral norm's power iteration at every call)
    a, _, _ = model(labels, z=z)
    b, _, _ = model(labels, z=z)
    torch.testing.assert_close(a, b)  # deterministic given z
    with pytest.raises(ValueError, match="z must have shape"):
        model(labels, z=torch.randn(2, 3))
    with pytest.raises(ValueError, match="need use_vae=True"):
        tiny("spade")(labels, image=image)


def test_onehot_input_equals_integer_labels():
    """The published one-hot map (edge channel last) and integer labels + instance map give one output."""
    labels, instance, _ = inputs()
    edge = semnorm.nn._inputs.instance_edges(instance)
    onehot = torch.cat([TF.one_hot(labels, L).permute(0, 3, 1, 2).float(), edge], 1)
    for name in ("spade", "clade", "clade_icpe"):
        model = tiny(name, instance=True).eval()
        a = model(labels, instance=instance)
        b = model(onehot)
        c = model(labels, edge=edge)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)
    with pytest.raises(ValueError, match="uses instance edges"):
        tiny("clade", instance=True)(labels)


def test_icpe_positional_map_shared():
    """The positional map is computed once from the full-resolution labels; passing it gives the same output."""
    torch.manual_seed(0)
    model = tiny("clade_icpe").eval()
    for m in model.modules():  # non-zero ICPE weights so that the map matters
        if isinstance(m, CLADE):
            nn.init.normal_(m.class_specified_affine.dist_conv_w.weight, 0, 0.5)
    labels, _, _ = inputs()
    d = semnorm.functional.intra_class_positional(labels, ignore_label=0)
    torch.testing.assert_close(model(labels), model(labels, positional=d))
    assert not torch.allclose(model(labels), model(labels, positional=torch.zeros_like(d)))


def test_sean_style_api():
    torch.manual_seed(0)
    model = tiny("sean", sean_noise=False).eval()
    for m in model.modules():  # a style branch strong enough to see (the published init makes it ~1e-4)
        if isinstance(m, SEAN) and m.use_style:
            nn.init.normal_(m.conv_gamma.weight, 0, 0.3)
            nn.init.normal_(m.blending_gamma, 2.0, 0.1)
    labels, _, image = inputs()
    style = model.encode_style(image, labels)
    assert style.shape == (2, L, model.config.style_dim)
    absent = [c for c in range(L) if not (labels[0] == c).any()]
    assert absent and style[0, absent].abs().max() == 0  # absent regions: zero codes
    torch.testing.assert_close(model(labels, image=image), model.generate(labels, style))
    edited = style.clone()
    edited[0] = style[1]  # sample 1's styles for sample 0's regions
    assert not torch.allclose(model.generate(labels, edited)[0], model.generate(labels, style)[0])
    with pytest.raises(ValueError, match="exactly one of image"):
        model(labels)
    with pytest.raises(ValueError, match="style must have shape"):
        model(labels, style=style[:, :3])
    # the last block is mask-only
    assert not hasattr(model.up_3.ace_0, "fc_mu0") and hasattr(model.up_2.ace_0, "fc_mu0")


# ----------------------------------------------------------------------------------------------
# fused vs reference


@needs_ext
@pytest.mark.parametrize("kind, name, overrides", TINY, ids=TINY_IDS)
def test_fused_equals_reference(kind, name, overrides):
    torch.manual_seed(0)
    fused = tiny(name, **overrides)
    ref = set_impl(copy.deepcopy(fused), "reference")
    for m in ref.modules():
        if isinstance(m, (SPADE, CLADE, SEAN)):
            assert m.impl == "reference"
        if isinstance(m, SPADE):
            m.fast = "never"  # the dense published formulation
    labels, instance, image = inputs()
    torch.manual_seed(1)
    a = run(fused, labels, instance, image, **({"z": torch.randn(2, 16)} if overrides.get("use_vae") else {}))
    torch.manual_seed(1)
    b = run(ref, labels, instance, image, **({"z": torch.randn(2, 16)} if overrides.get("use_vae") else {}))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    a.square().mean().backward()
    b.square().mean().backward()
    # float32 sums in other orders through the whole network: tolerances relative to each parameter's largest
    # gradient, and to the network's (gradients that vanish mathematically, e.g. of conv biases before a
    # batch norm, are rounding noise)
    scale = max(float(p.grad.abs().max()) for p in fused.parameters() if p.grad is not None)
    for (pname, p), q in zip(fused.named_parameters(), ref.parameters()):
        if p.grad is not None:
            atol = max(1e-3 * float(p.grad.abs().max()), 1e-5 * scale)
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=atol, msg=lambda m: f"{pname}: {m}")


# ----------------------------------------------------------------------------------------------
# published names and shapes, written out from COMPAT.md (independent of the implementation)


def _bn(prefix, c, norm):
    if norm == "instance":
        return {}
    return {f"{prefix}.running_mean": (c,), f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _sn_conv(prefix, cout, cin, k, bias):
    keys = {f"{prefix}.weight_orig": (cout, cin, k, k), f"{prefix}.weight_u": (cout,), f"{prefix}.weight_v": (cin * k * k,)}
    if bias:
        keys[f"{prefix}.bias"] = (cout,)
    return keys


def _spade_mlp(prefix, c, sem_in, hidden=None, k=3):
    return {f"{prefix}.mlp_shared.0.weight": (hidden, sem_in, k, k), f"{prefix}.mlp_shared.0.bias": (hidden,),
            f"{prefix}.mlp_gamma.weight": (c, hidden, k, k), f"{prefix}.mlp_gamma.bias": (c,),
            f"{prefix}.mlp_beta.weight": (c, hidden, k, k), f"{prefix}.mlp_beta.bias": (c,)}


def published_keys(cfg: GeneratorConfig, method: str) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the published generator (net_G; plus the VAE encoder under ``encoder.``)."""
    nf, L_, hid, sem = cfg.ngf, cfg.num_classes, cfg.hidden, cfg.semantic_nc
    keys: dict[str, tuple[int, ...]] = {}
    sh, sw = cfg.latent_size
    if cfg.use_vae:
        keys.update({"fc.weight": (16 * nf * sh * sw, cfg.z_dim), "fc.bias": (16 * nf * sh * sw,)})
    else:
        keys.update({"fc.weight": (16 * nf, sem, 3, 3), "fc.bias": (16 * nf,)})
    chans = [("head_0", 16, 16), ("G_middle_0", 16, 16), ("G_middle_1", 16, 16), ("up_0", 16, 8), ("up_1", 8, 4),
             ("up_2", 4, 2), ("up_3", 2, 1)]
    for i, (blk, a, b) in enumerate(chans):
        fin, fout = a * nf, b * nf
        fmid = min(fin, fout)
        layer = method
        if method == "mixed":
            layer = "clade" if i + 1 >= cfg.clade_from else "spade"
        e = 1 if (layer.startswith("clade") and cfg.instance) else 0
        keys.update(_sn_conv(f"{blk}.conv_0", fmid, fin + e, 3, True))
        keys.update(_sn_conv(f"{blk}.conv_1", fout, fmid + e, 3, True))
        norms = [("0", fin), ("1", fmid)]
        if fin != fout:
            keys.update(_sn_conv(f"{blk}.conv_s", fout, fin + e, 1, False))
            norms.append(("s", fin))
        for suffix, c in norms:
            if layer == "spade":
                p = f"{blk}.norm_{suffix}"
                keys.update(_bn(f"{p}.param_free_norm", c, cfg.norm))
                keys.update(_spade_mlp(p, c, sem, hid))
            elif layer in ("clade", "clade_icpe"):
                p = f"{blk}.norm_{suffix}"
                keys.update(_bn(f"{p}.param_free_norm", c, cfg.norm))
                keys.update({f"{p}.class_specified_affine.weight": (L_, c), f"{p}.class_specified_affine.bias": (L_, c)})
                if layer == "clade_icpe":
                    for w in ("dist_conv_w", "dist_conv_b"):
                        keys.update({f"{p}.class_specified_affine.{w}.weight": (1, 2, 1, 1),
                                     f"{p}.class_specified_affine.{w}.bias": (1,)})
                if cfg.instance:
                    keys.update({f"{p}.inst_conv.weight": (1, 1, 1, 1), f"{p}.inst_conv.bias": (1,)})
            else:  # SEAN (ACE)
                p = f"{blk}.ace_{suffix}"
                s = cfg.style_dim
                keys.update({f"{p}.blending_gamma": (1,), f"{p}.blending_beta": (1,), f"{p}.noise_var": (c,)})
                keys.update(_bn(f"{p}.param_free_norm", c, cfg.norm))
                keys.update(_bn(f"{p}.Spade.param_free_norm", c, cfg.norm))
                keys.update(_spade_mlp(f"{p}.Spade", c, sem, hid))
                if blk != "up_3":
                    for j in range(L_):
                        keys.update({f"{p}.fc_mu{j}.weight": (s, s), f"{p}.fc_mu{j}.bias": (s,)})
                    for conv in ("conv_gamma", "conv_beta"):
                        keys.update({f"{p}.{conv}.weight": (c, s, 3, 3), f"{p}.{conv}.bias": (c,)})
    keys.update({"conv_img.weight": (3, nf, 3, 3), "conv_img.bias": (3,)})
    if method == "sean":
        g, s = cfg.style_ngf, cfg.style_dim
        for idx, shape, cout in ((1, (g, 3, 3, 3), g), (4, (2 * g, g, 3, 3), 2 * g), (7, (4 * g, 2 * g, 3, 3), 4 * g),
                                 (10, (4 * g, 8 * g, 3, 3), 8 * g),  # ConvTranspose2d: weight (in, out, k, k)
                                 (14, (s, 8 * g, 3, 3), s)):
            keys.update({f"Zencoder.model.{idx}.weight": shape, f"Zencoder.model.{idx}.bias": (cout,)})
    if cfg.use_vae:
        n = {256: 6, 128: 5, 64: 4, 32: 3, 16: 2}[cfg.vae_input_size]
        cin = 3
        for i in range(n):
            cout = nf * min(2 ** i, 8)
            keys.update(_sn_conv(f"encoder.layer{i + 1}.0", cout, cin, 3, False))
            cin = cout
        for head in ("fc_mu", "fc_var"):
            keys.update({f"encoder.{head}.weight": (cfg.z_dim, cin * 16), f"encoder.{head}.bias": (cfg.z_dim,)})
    return keys


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind, name, overrides", TINY, ids=TINY_IDS)
def test_published_keys_tiny(kind, name, overrides):
    model = tiny(name, **overrides)
    assert _shapes(model) == published_keys(model.config, name)


@pytest.mark.parametrize("name, preset, overrides", [
    ("spade", "ade20k", {}), ("clade", "coco_stuff", {}), ("clade_icpe", "cityscapes", {}),
    ("sean", "celebamask_hq", {}), ("spade", "ade20k", {"use_vae": True}), ("mixed", "ade20k", {}),
])
def test_published_keys_full_size(name, preset, overrides):
    with torch.device("meta"):
        model = build_generator(name, preset, **overrides)
    shapes = _shapes(model)
    assert shapes == published_keys(model.config, name)


def test_published_keys_spot_checks():
    """A handful of exact published keys and shapes (COMPAT.md)."""
    with torch.device("meta"):
        ade = build_generator("spade", "ade20k")
        coco = build_generator("clade", "coco_stuff")
        sean = build_generator("sean", "celebamask_hq")
        vae = build_generator("spade", "ade20k", use_vae=True)
    a, c, s, v = _shapes(ade), _shapes(coco), _shapes(sean), _shapes(vae)
    assert a["head_0.norm_0.mlp_shared.0.weight"] == (128, 151, 3, 3)
    assert a["head_0.norm_0.param_free_norm.running_var"] == (1024,)
    assert a["up_0.conv_s.weight_orig"] == (512, 1024, 1, 1) and "up_0.conv_s.bias" not in a
    assert a["fc.weight"] == (1024, 151, 3, 3) and a["conv_img.weight"] == (3, 64, 3, 3)
    assert "G_middle_0.conv_s.weight_orig" not in a
    assert sum(isinstance(m, SPADE) for m in ade.modules()) == 18  # 18 norm layers in a 'normal' generator
    assert c["fc.weight"] == (1024, 184, 3, 3)
    assert c["head_0.norm_0.class_specified_affine.weight"] == (183, 1024)
    assert c["head_0.conv_0.weight_orig"] == (1024, 1025, 3, 3) and c["up_3.conv_1.weight_orig"] == (64, 65, 3, 3)
    assert c["up_1.norm_s.inst_conv.weight"] == (1, 1, 1, 1)
    assert s["Zencoder.model.10.weight"] == (128, 256, 3, 3) and s["Zencoder.model.14.weight"] == (512, 256, 3, 3)
    assert s["head_0.ace_0.fc_mu18.weight"] == (512, 512) and "head_0.ace_0.fc_mu19.weight" not in s
    assert s["up_2.ace_s.conv_gamma.weight"] == (256, 512, 3, 3) and "up_3.ace_0.conv_gamma.weight" not in s
    assert s["up_3.ace_0.Spade.mlp_shared.0.weight"] == (128, 19, 3, 3) and s["up_3.ace_1.noise_var"] == (64,)
    assert v["fc.weight"] == (16 * 64 * 8 * 8, 256) and v["encoder.layer6.0.weight_orig"] == (512, 512, 3, 3)
    assert v["encoder.fc_mu.weight"] == (256, 8192)


@pytest.mark.parametrize("kind, name, overrides", TINY, ids=TINY_IDS)
def test_load_published_state_dict_strict(kind, name, overrides):
    """A state dict made with the published names (random values) loads strictly and is used."""
    torch.manual_seed(0)
    model = tiny(name, **overrides).eval()
    state = {}
    for key, shape in published_keys(model.config, name).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape) + 0.5
        else:
            state[key] = torch.randn(shape) * 0.1
    model.load_state_dict(state, strict=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
    labels, instance, image = inputs()
    torch.manual_seed(1)
    out = run(model, labels, instance, image)
    assert torch.isfinite(out).all()


def test_vae_published_checkpoint_split():
    model = tiny("spade", use_vae=True)
    parts = model.published_state_dicts()
    assert "fc.weight" in parts["G"] and not any(k.startswith("encoder.") for k in parts["G"])
    assert "layer1.0.weight_orig" in parts["E"] and "fc_var.bias" in parts["E"]
    other = tiny("spade", use_vae=True)
    other.load_published({f"module.{k}": v for k, v in parts["G"].items()}, parts["E"])
    for k, v in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v)
    other.load_published(parts["G"])  # the generator alone (strict on its own keys)
    with pytest.raises(RuntimeError, match="missing keys"):
        other.load_published({k: v for k, v in parts["G"].items() if k != "fc.bias"})
    assert isinstance(model.encoder, ConvEncoder)


def test_published_init():
    torch.manual_seed(0)
    model = tiny("clade_icpe", instance=True)
    layer = model.up_3.norm_0
    assert (layer.class_specified_affine.weight >= 0).all() and (layer.class_specified_affine.weight <= 1).all()
    assert layer.class_specified_affine.weight.std() > 0.2  # U(0, 1) kept, not xavier
    assert layer.class_specified_affine.bias.abs().max() == 0
    # every Conv/Linear gets xavier_normal(0.02) and zero bias, the ICPE convs included (published init_weights)
    assert layer.class_specified_affine.dist_conv_w.weight.abs().max() > 0
    assert model.up_3.conv_0.bias.abs().max() == 0 and model.fc.bias.abs().max() == 0
    w = model.head_0.conv_0.weight_orig
    fan_in, fan_out = w.shape[1] * 9, w.shape[0] * 9
    expected = 0.02 * (2.0 / (fan_in + fan_out)) ** 0.5
    assert abs(w.std().item() / expected - 1) < 0.1
    sean = tiny("sean")
    assert sean.head_0.ace_0.blending_gamma.item() == 0 and sean.head_0.ace_0.noise_var.abs().max() == 0


# ----------------------------------------------------------------------------------------------
# full-size parameter counts and FLOPs against the papers


#: the papers' figures: (name, preset) -> parameters (M); they round to the paper's 0.1 M
PAPER_PARAMS = {
    ("spade", "ade20k"): 96.5, ("clade", "ade20k"): 71.4, ("clade_icpe", "ade20k"): 71.4,
    ("spade", "coco_stuff"): 97.5, ("clade", "coco_stuff"): 72.5, ("clade_icpe", "coco_stuff"): 72.5,
    ("spade", "cityscapes"): 93.0, ("clade", "cityscapes"): 67.9, ("clade_icpe", "cityscapes"): 67.9,
    ("sean", "celebamask_hq"): 266.9,
}


@pytest.mark.parametrize("name, preset", list(PAPER_PARAMS), ids=[f"{n}-{p}" for n, p in PAPER_PARAMS])
def test_full_size_param_counts(name, preset):
    with torch.device("meta"):
        model = build_generator(name, preset)
    params = report.count_params(model) / 1e6
    assert round(params, 1) == PAPER_PARAMS[(name, preset)], params


@needs_ext
@pytest.mark.parametrize("name, preset", [("spade", "ade20k"), ("clade", "ade20k")])
def test_flops_match_clade_table1(name, preset):
    row = report.measure(name, preset)
    assert abs(row.flops_g / row.paper_flops_g - 1) < 1e-3, row
    assert round(row.params_m, 1) == row.paper_params_m


@needs_ext
@pytest.mark.slow
@pytest.mark.parametrize("name, preset", [k for k in report.PAPER if k[0] != "scgan"])
def test_flops_all_paper_rows(name, preset):
    row = report.measure(name, preset)
    assert round(row.params_m, 1) == row.paper_params_m, row
    if row.paper_flops_g is not None:
        assert abs(row.flops_g / row.paper_flops_g - 1) < 1e-3, row


@needs_ext
def test_flops_tiny_by_hand():
    """The counter on a tiny CLADE generator equals the convention written out by hand."""
    cfg = preset_config("custom", layer="clade")
    row = report.measure("clade", "custom")
    expected = cfg.semantic_nc * 9 * 16 * cfg.ngf * cfg.latent_size[0] * cfg.latent_size[1] + 16 * cfg.ngf * 4
    sizes = cfg.block_sizes()
    for name, fin, fout in cfg.block_channels():
        h, w = sizes[name]
        fmid = min(fin, fout)
        expected += (fin * 9 + 1) * fmid * h * w + (fmid * 9 + 1) * fout * h * w
        if fin != fout:
            expected += fin * fout * h * w
    expected += (cfg.ngf * 9 + 1) * 3 * cfg.output_size[0] * cfg.output_size[1]
    assert row.flops_g * 1e9 == pytest.approx(expected, rel=1e-9)


def test_report_command_prints_table(capsys):
    assert report.main(["--small", "--methods", "clade", "spade"]) == 0
    out = capsys.readouterr().out
    assert "| method | preset | params (M) |" in out
    assert "| clade | custom | 1.071 |" in out and "| spade | custom |" in out
    rows = report.report_rows([("spade", "ade20k")])
    assert "| spade | ade20k | 96.492 | 96.5 |" in report.format_table(rows)


# ----------------------------------------------------------------------------------------------
# SC-GAN (built by models/scgan.py, another module)


def test_scgan_missing_module_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "semnorm.models.scgan", None)
    with pytest.raises(ImportError, match="semnorm.models.scgan is not available"):
        build_generator("scgan", "ade20k")


def test_scgan_builds_on_meta():
    pytest.importorskip("semnorm.models.scgan", reason="models/scgan.py (the SC-GAN generator) is not in this tree")
    with torch.device("meta"):
        model = build_generator("scgan", "ade20k")
    assert isinstance(model, nn.Module) and report.count_params(model) > 0


# ----------------------------------------------------------------------------------------------
# torch.compile and training


def test_compile_resblock_fullgraph():
    """A CLADE residual block with instance edges compiles as one graph (aot_eager: cheap) and matches eager."""
    cfg = preset_config("custom", layer="clade", instance=True)
    torch.manual_seed(0)
    block = SemanticResBlock(16, 8, "clade", cfg)
    eager = copy.deepcopy(block)
    labels, instance, _ = inputs(size=16)
    edge = semnorm.nn._inputs.instance_edges(instance)
    x = torch.randn(2, 16, 8, 8)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    y = compiled(x, labels, edge=edge)
    torch.testing.assert_close(y, eager(x, labels, edge=edge), rtol=1e-5, atol=1e-6)
    y.sum().backward()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clade", "spade", "clade_icpe"])
def test_compile_generator_fullgraph_inductor(name):
    torch.manual_seed(0)
    model = tiny(name)
    eager = copy.deepcopy(model)
    labels, _, _ = inputs()
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(labels)
    torch.testing.assert_close(out, eager(labels), rtol=1e-4, atol=1e-5)
    out.square().mean().backward()
    assert model.fc.weight.grad is not None


@pytest.mark.parametrize("name", ["clade", "spade"])
def test_adam_reduces_reconstruction_loss(name):
    """A few TTUR-style Adam steps fit a tiny batch: the L1 loss to a per-class colour image drops."""
    torch.manual_seed(0)
    model = tiny(name)
    labels, _, _ = inputs(n=2)
    colors = torch.rand(L, 3) * 1.6 - 0.8
    target = colors[labels].permute(0, 3, 1, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.0, 0.9))
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = (model(labels) - target).abs().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.8 * losses[0], losses
