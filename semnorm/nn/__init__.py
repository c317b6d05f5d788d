"""semnorm.nn: drop-in normalization layers (SPADE, CLADE, SEAN, SCN, SCC) on semnorm's ops."""

from .norm import NORMS, ParamFreeNorm
from .spade import SPADE

__all__ = ["NORMS", "ParamFreeNorm", "SPADE"]
from .sean import SEAN, region_style_codes  # noqa: E402

__all__ += ["SEAN", "region_style_codes"]
