"""Load published SPADE / CLADE / SEAN / SC-GAN checkpoints into semnorm's networks.

The published ``<epoch>_net_G.pth`` / ``_net_D.pth`` / ``_net_E.pth`` files are plain ``state_dict()``s
with the parameter names that semnorm's networks keep (COMPAT.md), so loading is a ``load_state_dict``;
this helper adds the safe read (``torch.load(weights_only=True)``: no pickled code runs), strips the
``module.`` prefix that (Distributed)DataParallel checkpoints carry, and reports missing and unexpected
keys by name. It renames nothing else: a key that does not match is reported, never mapped silently.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["LoadReport", "load_published", "read_state_dict"]

_PREFIX = "module."


class LoadReport(NamedTuple):
    """What :func:`load_published` did: keys absent from the checkpoint, keys it had that the module lacks,
    and whether a ``module.`` prefix was stripped."""

    missing_keys: list[str]
    unexpected_keys: list[str]
    stripped_prefix: bool


def read_state_dict(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict from a path (read with ``torch.load(map_location='cpu', weights_only=True)``) or a mapping.

    A checkpoint holding ``{'state_dict': ...}`` or ``{'model': ...}`` around the tensors is unwrapped.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        state = torch.load(os.fspath(path_or_state_dict), map_location="cpu", weights_only=True)
    else:
        state = path_or_state_dict
    if not isinstance(state, Mapping):
        raise TypeError(f"load_published: expected a state dict (a mapping of names to tensors), got {type(state).__name__}")
    for wrapper in ("state_dict", "model"):
        if wrapper in state and isinstance(state[wrapper], Mapping) and len(state) <= 3:
            state = state[wrapper]
            break
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"load_published: non-tensor entries in the state dict: {bad[:5]}{' ...' if len(bad) > 5 else ''}")
    return dict(state)


def _describe(keys: list[str], limit: int = 20) -> str:
    shown = "\n  ".join(keys[:limit])
    more = f"\n  ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"\n  {shown}{more}"


def load_published(module: nn.Module, path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
                   strict: bool = True) -> LoadReport:
    """Load a published checkpoint into ``module``.

    Args:
        module: a semnorm network (generator, discriminator or encoder).
        path_or_state_dict: a ``.pth`` path or an in-memory state dict with the published names.
        strict: raise on any missing or unexpected key (the default); with False, load what matches and
            return the report.

    Returns:
        :class:`LoadReport` (empty key lists after a strict load).

    Raises:
        KeyError: ``strict`` and keys differ; the message lists the missing and unexpected names.
        RuntimeError: a tensor's shape differs (from ``load_state_dict``), with the key named.
    """
    state = read_state_dict(path_or_state_dict)
    stripped = bool(state) and all(k.startswith(_PREFIX) for k in state)
    if stripped:
        state = {k[len(_PREFIX):]: v for k, v in state.items()}
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    if strict and (missing or unexpected):
        msg = [f"load_published: the checkpoint does not match {type(module).__name__}"]
        if missing:
            msg.append(f"{len(missing)} missing key(s) (in the module, not in the checkpoint):{_describe(missing)}")
        if unexpected:
            msg.append(f"{len(unexpected)} unexpected key(s) (in the checkpoint, not in the module):{_describe(unexpected)}")
        msg.append("Check the preset / config options (label count, instance edges, upsampling layers, VAE).")
        raise KeyError("\n".join(msg))
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs module {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        raise RuntimeError("load_published: shape mismatch for " + "; ".join(mismatched[:10])
                           + (f" ... and {len(mismatched) - 10} more" if len(mismatched) > 10 else ""))
    module.load_state_dict(state, strict=strict)
    return LoadReport(missing, unexpected, stripped)
