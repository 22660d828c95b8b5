"""Token reduction in the vision encoder (ToMe, EViT, random; ELIP and TRIPS to come)."""

from vlprune.reduce.base import ReduceConfig, apply, detach, list_methods, method_config, token_schedule
from vlprune.reduce.evit import EViTConfig
from vlprune.reduce.random import RandomConfig
from vlprune.reduce.tome import ToMeConfig, bipartite_merge

__all__ = ["ReduceConfig", "apply", "detach", "list_methods", "method_config", "token_schedule", "EViTConfig",
           "RandomConfig", "ToMeConfig", "bipartite_merge"]
