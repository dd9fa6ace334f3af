"""ECA in CNNs users already have: swap their SE modules (``replace_se``), attach ECA where the paper's rule
puts it in a known family or after named modules (``attach_eca``), and rebuild such a model from a name and a
recorded list of steps (``create_external``, ``replay``)."""

from .attach import AttachReport, attach_eca
from .external import create_external, is_external, replay
from .replace_se import ReplaceReport, is_squeeze_excitation, replace_se

__all__ = [
    "AttachReport",
    "ReplaceReport",
    "attach_eca",
    "create_external",
    "is_external",
    "is_squeeze_excitation",
    "replace_se",
    "replay",
]
