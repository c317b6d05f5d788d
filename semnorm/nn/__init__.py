"""semnorm.nn: drop-in normalization layers (SPADE, CLADE, SEAN, SCN, SCC) on semnorm's ops."""

from .clade import CLADE
from .norm import NORMS, ParamFreeNorm
from .scgan import SCC, SCN
from .sean import SEAN, region_style_codes
from .spade import SPADE

__all__ = ["NORMS", "ParamFreeNorm", "SPADE", "CLADE", "SEAN", "SCN", "SCC", "region_style_codes"]
