"""SmartTrim: per-input adaptive token and attention-head trimming of fusion models (docs/smarttrim.md)."""

from vlprune.trim.config import SmartTrimConfig
from vlprune.trim.model import SmartTrim, TrimOutput, TrimRecord

__all__ = ["SmartTrim", "SmartTrimConfig", "TrimOutput", "TrimRecord"]
