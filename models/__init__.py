"""semnorm.models: generators, discriminators, encoders and losses of the SPADE family.

Built on the layers of :mod:`semnorm.nn`, with the published parameter names so published checkpoints
load. Generators::

    from semnorm.models import build_generator
    g = build_generator("clade", "ade20k")                 # the CLADE paper's ADE20K generator
    g = build_generator("spade", "custom", use_vae=True)   # a tiny multimodal SPADE generator
    g = build_generator("mixed", "cityscapes", clade_from=3)

``python -m semnorm.models.report`` prints parameters and FLOPs of every method and preset beside the
papers' figures.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .blocks import LabelConv2d, SemanticResBlock, init_weights, set_impl, set_spade_fast
from .config import PRESETS, GeneratorConfig, check_overrides, preset_config
from .encoders import ConvEncoder, Zencoder, reparameterize
from .generators import CLADEGenerator, MixedGenerator, SEANGenerator, SPADEGenerator

__all__ = [
    "build_generator", "GENERATORS", "MIXED_CLADE_FROM", "GeneratorConfig", "PRESETS", "preset_config",
    "SPADEGenerator", "CLADEGenerator", "MixedGenerator", "SEANGenerator", "ConvEncoder", "Zencoder",
    "SemanticResBlock", "LabelConv2d", "reparameterize", "init_weights", "set_impl", "set_spade_fast",
]

#: generator names accepted by :func:`build_generator`
GENERATORS = ("spade", "clade", "clade_icpe", "sean", "scgan", "mixed")
#: default transition of the mixed generator per preset (CLADE Table 6's best mIoU: S(1-2)+C(3-7) on
#: Cityscapes, S(1-5)+C(6-7) on ADE20k-outdoor, used for every other preset)
MIXED_CLADE_FROM = {"cityscapes": 3}
_DEFAULT_CLADE_FROM = 6

_LAYER_OF = {"spade": "spade", "clade": "clade", "clade_icpe": "clade_icpe", "sean": "sean", "mixed": "spade"}
_CLASS_OF = {"spade": SPADEGenerator, "clade": CLADEGenerator, "clade_icpe": CLADEGenerator, "sean": SEANGenerator,
             "mixed": MixedGenerator}


def build_generator(name: str, preset: str | GeneratorConfig, **overrides: Any) -> nn.Module:
    """Build a generator by method name and dataset preset.

    Args:
        name: "spade", "clade", "clade_icpe", "sean", "scgan" or "mixed" (SPADE at low resolution,
            CLADE from block ``clade_from`` on; default per preset in :data:`MIXED_CLADE_FROM`, else 6).
        preset: "ade20k", "coco_stuff", "cityscapes", "celebamask_hq" or "custom" (tiny), see
            :data:`semnorm.models.config.PRESETS`; or a :class:`GeneratorConfig`.
        **overrides: :class:`GeneratorConfig` field values (e.g. ``ngf=32, use_vae=True``); unknown
            names raise a TypeError listing the valid ones. For "scgan" they go to
            ``semnorm.models.scgan.build_scgan_generator``.

    Returns:
        the generator (an ``nn.Module``), initialised as published (xavier-normal gain 0.02).
    """
    if name not in GENERATORS:
        raise ValueError(f"build_generator: unknown generator {name!r}; valid names: {', '.join(GENERATORS)}")
    if name == "scgan":
        try:
            from .scgan import build_scgan_generator
        except ModuleNotFoundError as err:
            if err.name in (f"{__name__}.scgan",):
                raise ImportError("build_generator('scgan'): semnorm.models.scgan is not available "
                                  "(models/scgan.py is missing)") from err
            raise
        return build_scgan_generator(preset, **overrides)
    check_overrides(overrides)
    layer = _LAYER_OF[name]
    if "layer" in overrides and overrides["layer"] != layer:
        raise ValueError(f"build_generator: generator {name!r} uses layer={layer!r}; got layer={overrides['layer']!r} "
                         f"(pick the generator name instead)")
    if name != "mixed" and overrides.get("clade_from") is not None:
        raise ValueError(f"build_generator: clade_from is an option of the 'mixed' generator, not {name!r}")
    settings: dict[str, Any] = {"layer": layer, **overrides}
    if name == "mixed" and settings.get("clade_from") is None:
        key = preset if isinstance(preset, str) else None
        settings["clade_from"] = MIXED_CLADE_FROM.get(key, _DEFAULT_CLADE_FROM)
    elif name != "mixed":
        settings["clade_from"] = None
    config = preset_config(preset, **settings)
    return _CLASS_OF[name](config)
