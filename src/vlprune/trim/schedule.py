"""Linear curriculum of the keep-ratio targets (SmartTrim section 4.2, "Linear Curriculum Scheduler")."""

from __future__ import annotations


def curriculum_target(target: float, step: int, total_steps: int, fraction: float) -> float:
    """γ at training step ``step`` (1-based): linear from 1.0 (before step 1) to ``target``, reached after
    ``fraction`` of ``total_steps``, then constant. ``fraction = 0`` gives ``target`` from the first step."""
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise ValueError(f"step={step} is out of range: expected 0..total_steps={total_steps}")
    ramp = fraction * total_steps
    progress = 1.0 if ramp == 0 else min(1.0, step / ramp)
    return 1.0 - (1.0 - target) * progress
