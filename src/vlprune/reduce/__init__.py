"""Token reduction in the vision encoder: ELIP, TRIPS, EViT, ToMe and random."""

from vlprune.reduce.base import ReduceConfig, apply, detach, token_schedule
from vlprune.reduce.elip import ELIPConfig
from vlprune.reduce.evit import EViTConfig
from vlprune.reduce.random import RandomConfig
from vlprune.reduce.tome import ToMeConfig, bipartite_merge
from vlprune.reduce.trips import TRIPSConfig

__all__ = ["ELIPConfig", "EViTConfig", "RandomConfig", "ReduceConfig", "TRIPSConfig", "ToMeConfig", "apply",
           "bipartite_merge", "detach", "token_schedule"]
