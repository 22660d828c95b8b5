"""SmartTrim: per-input adaptive token and attention-head trimming of fusion models (DESIGN section 4)."""

from vlprune.trim.config import TRIM_METHODS, SmartTrimConfig, trim_config
from vlprune.trim.model import SmartTrim, TrimOutput, TrimRecord

__all__ = ["TRIM_METHODS", "SmartTrim", "SmartTrimConfig", "TrimOutput", "TrimRecord", "trim_config"]
