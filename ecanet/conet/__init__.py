"""CONet (Hosseini et al., ICCVW 2021): the channel size of every layer searched from the information its
weights accumulate in training ("Rank", "Rank Average Slope"), on the width machinery the pruning package
uses (``ecanet.models.widths``)."""

from .config import SearchConfig
from .rank import evbmf_rank, layer_rank, rank_average_slope
from .search import search_widths, searchable_groups

__all__ = ["SearchConfig", "evbmf_rank", "layer_rank", "rank_average_slope", "search_widths", "searchable_groups"]
