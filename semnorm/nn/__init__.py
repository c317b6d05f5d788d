"""semnorm.nn: drop-in normalization layers (SPADE, CLADE, SEAN, SCN, SCC) on semnorm's ops."""

from .norm import NORMS, ParamFreeNorm
from .spade import SPADE

__all__ = ["NORMS", "ParamFreeNorm", "SPADE"]
from .clade import CLADE  # noqa: E402
from .scgan import SCC, SCN  # noqa: E402

__all__ += ["CLADE", "SCN", "SCC"]
