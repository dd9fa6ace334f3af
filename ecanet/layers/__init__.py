"""Attention layers: ECA and its variants, with SE and CBAM as baselines."""

from .cbam import CBAM
from .eca import ECA, eca_kernel_size
from .factory import ATTENTIONS, ECA_ATTENTIONS, attention_attribute, create_attention, is_attention
from .fused import fused_tail
from .se import SE

__all__ = [
    "ATTENTIONS",
    "CBAM",
    "ECA",
    "ECA_ATTENTIONS",
    "SE",
    "attention_attribute",
    "create_attention",
    "eca_kernel_size",
    "fused_tail",
    "is_attention",
]
