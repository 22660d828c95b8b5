"""The papers' claims as data, decided by paired statistics on the shipped models (docs/experiments.md).

A claim compares side ``a`` with side ``b`` on the same items (``EvalSpec`` runs, 5,000 toy-world items) and
states a tolerance band on ``mean(a) - mean(b)`` of a per-item score; ``vlprune.experiments.stats`` gives the
interval and the verdict. A claim about training with a method that has not been run at the budget it needs is
listed with verdict ``not measured`` and what it needs. ``write_claims`` renders ``docs/results/claims.json``
and ``claims.md``; ``stale_claims`` lists those whose recorded weights or spec no longer match.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from vlprune.experiments.runs import EvalSpec, run_eval
from vlprune.experiments.stats import paired_bootstrap, verdict
from vlprune.models.io import weights_sha256
from vlprune.reduce.budget import at_budget
from vlprune.registry import model_config

ITEMS = 5000
CUT = 0.3  # the inference comparisons: every method solved to 30% fewer image-tower GFLOPs (reduce.budget)
NO_LOSS = (-0.01, math.inf)       # "keeps accuracy": at most one point lost
BETTER = (0.0, math.inf)          # "A beats B"
CLAIM_FIELDS = ("claim", "paper", "metric", "a", "b", "difference", "ci_low", "ci_high", "seeds", "items",
                "verdict", "page", "weights_sha256")


@dataclass(frozen=True)
class Claim:
    """``a`` vs ``b`` on ``metric`` (a per-item score of the runs) within ``tolerance``; ``needs`` instead of
    ``a`` / ``b``: a claim not measured yet and what it needs."""

    id: str
    claim: str
    paper: str
    metric: str = ""
    a: EvalSpec | None = None
    b: EvalSpec | None = None
    tolerance: tuple[float, float] = NO_LOSS
    needs: str = ""
    page: str = "docs/results/claims.md"
    labels: tuple[str, str] = field(default=("a", "b"))


def _at_cut(model: str, name: str, **fixed) -> str:
    return at_budget(name, model_config(model), CUT, **fixed).spec()


def _vqa(method: str) -> EvalSpec:
    return EvalSpec("toy-fusion", "vqa", f"toyworld:val:{ITEMS}", method)


def _retrieval(method: str) -> EvalSpec:
    return EvalSpec("toy-clip", "retrieval", f"toyworld:val:{ITEMS}", method, rerank_k=0)


def claims() -> list[Claim]:
    """Every claim the pages state, in page order (specs are solved to the cut for the current configs)."""
    elip_config = at_budget("elip", model_config("toy-fusion"), CUT, mode="cheap", lam=0.8)
    elip_guided, elip_dropping = elip_config.spec(), replace(elip_config, merge=False).spec()
    elip_vision = _at_cut("toy-fusion", "elip", mode="cheap", lam=1.0)
    elip_retrieval = _at_cut("toy-clip", "elip", mode="cheap", lam=1.0)
    measured = [
        Claim("elip-inference-keeps-vqa", "ELIP (λ=0.8) at 30% fewer image GFLOPs, no training, keeps VQA within 1 "
              "point of the base", "ELIP", "vqa_score", _vqa(elip_guided), _vqa("none"), NO_LOSS,
              labels=("ELIP λ=0.8", "base")),
        Claim("elip-lambda", "ELIP's text guidance (λ=0.8) beats the same pruning without the text (λ=1) at equal "
              "GFLOPs", "ELIP", "vqa_score", _vqa(elip_guided), _vqa(elip_vision), BETTER,
              labels=("ELIP λ=0.8", "ELIP λ=1")),
        Claim("elip-merge-vs-drop", "ELIP merging the pruned tokens into one beats dropping them (same keep)", "ELIP",
              "vqa_score", _vqa(elip_guided), _vqa(elip_dropping), BETTER,
              labels=("merge", "drop")),
        Claim("elip-vs-evit", "ELIP beats EViT at equal GFLOPs", "ELIP", "vqa_score", _vqa(elip_guided),
              _vqa(_at_cut("toy-fusion", "evit")), BETTER, labels=("ELIP λ=0.8", "EViT")),
        Claim("elip-vs-tome", "ELIP beats ToMe at equal GFLOPs", "ELIP", "vqa_score", _vqa(elip_guided),
              _vqa(_at_cut("toy-fusion", "tome")), BETTER, labels=("ELIP λ=0.8", "ToMe")),
        Claim("elip-vs-evit-retrieval", "ELIP's pruning (vision only, λ=1) beats EViT at equal GFLOPs on retrieval "
              "(image->text R@1 queries)", "ELIP", "text_retrieval_hit@1", _retrieval(elip_retrieval),
              _retrieval(_at_cut("toy-clip", "evit")), BETTER, labels=("ELIP λ=1", "EViT")),
        Claim("trips-inference-keeps-vqa", "TRIPS at 30% fewer image GFLOPs, no training, keeps VQA within 1 point "
              "of the base (the paper trains with it: see trips-pretraining)", "TRIPS", "vqa_score",
              _vqa(_at_cut("toy-fusion", "trips")), _vqa("none"), NO_LOSS, labels=("TRIPS", "base")),
        Claim("trips-guided-vs-unguided", "TRIPS's text-guided selection beats the [CLS]-only selection it extends "
              "(EViT) at equal GFLOPs", "TRIPS", "vqa_score", _vqa(_at_cut("toy-fusion", "trips")),
              _vqa(_at_cut("toy-fusion", "evit")), BETTER, labels=("TRIPS", "EViT")),
    ]
    open_claims = [
        Claim("elip-pretraining", "pre-training with ELIP on keeps downstream accuracy at ~30% fewer GFLOPs", "ELIP",
              needs="toy-clip / toy-fusion pre-trained from scratch with and without ELIP at the shipped recipe's "
              "full length, 3 seeds each (issue 30)"),
        Claim("trips-pretraining", "TRIPS cuts ~27% of GFLOPs at no loss when trained with it", "TRIPS",
              needs="pre-training and fine-tuning with TRIPS on vs off at the budget of issue 30, 3 seeds"),
        Claim("smarttrim-cost", "SmartTrim keeps VQA within 1-2 points at 1.5-3x fewer GFLOPs", "SmartTrim",
              needs="a SmartTrim fine-tune that does not collapse (issue 29), 3 seeds, per-item scores of the "
              "trimmed model"),
        Claim("smarttrim-adaptive", "SmartTrim's savings adapt to the input", "SmartTrim",
              needs="the issue-29 SmartTrim model; per-input GFLOPs against scene content"),
        Claim("smarttrim-recipe", "curriculum and self-distillation each help SmartTrim", "SmartTrim",
              needs="ablations at the issue-29 budget, 3 seeds"),
        Claim("mope-vs-baselines", "MoPE's ranking beats magnitude, Taylor and every-other-layer at 25/50/75% of each "
              "tower after the same distillation", "MoPE-CLIP",
              needs="pruning + distillation runs per ranking and budget, 3 seeds (issue 24)"),
        Claim("mope-width-then-depth", "width-first-then-depth beats one-shot pruning", "MoPE-CLIP",
              needs="--stage finetune vs one-shot at equal distillation steps, 3 seeds (issue 24)"),
        Claim("mope-distillation", "distillation beats plain fine-tuning at equal steps", "MoPE-CLIP",
              needs="distillation vs fine-tuning at equal steps, 3 seeds (issue 24)"),
    ]
    return measured + open_claims


def decide(claim: Claim, store: Path) -> dict:
    """The claims-file entry of ``claim``: runs both sides (or reuses them) and applies the verdict rule."""
    if claim.a is None:
        return {"id": claim.id, "claim": claim.claim, "paper": claim.paper, "metric": None, "a": None, "b": None,
                "difference": None, "ci_low": None, "ci_high": None, "seeds": None, "items": None,
                "verdict": "not measured", "needs": claim.needs, "page": claim.page, "weights_sha256": None}
    runs = [run_eval(spec, store) for spec in (claim.a, claim.b)]
    scores = [np.asarray(r["metrics"]["per_item"][claim.metric], dtype=float) for r in runs]
    interval = paired_bootstrap(scores[0], scores[1], seed=0)
    return {"id": claim.id, "claim": claim.claim, "paper": claim.paper, "metric": claim.metric,
            "a": {"label": claim.labels[0], **asdict(claim.a), "mean": float(scores[0].mean()),
                  "vision_gflops": runs[0]["vision_gflops"]},
            "b": {"label": claim.labels[1], **asdict(claim.b), "mean": float(scores[1].mean()),
                  "vision_gflops": runs[1]["vision_gflops"]},
            "difference": interval.difference, "ci_low": interval.ci_low, "ci_high": interval.ci_high,
            "tolerance": list(claim.tolerance), "seeds": 1, "items": interval.items, "resamples": interval.resamples,
            "verdict": verdict(interval.ci_low, interval.ci_high, claim.tolerance), "page": claim.page,
            "weights_sha256": sorted({r["weights_sha256"] for r in runs})}


def _band(tolerance: list[float]) -> str:
    low, high = tolerance
    return f"({low:+.3f}, {'∞' if math.isinf(high) else f'{high:+.3f}'})"


def render(entries: list[dict]) -> str:
    """The claims page: one table row per claim (the single table writer of the claims)."""
    lines = ["# The papers' claims, decided", "",
             f"Each measured claim compares two runs on the same {ITEMS:,} toy-world val items (paired bootstrap of "
             "the difference of per-item scores, 2,000 resamples, seed 0; one seed: no training is involved). Verdict "
             "rule (docs/experiments.md): **reproduced** when the 95% interval lies inside the tolerance band, "
             "**refuted** when it lies outside, else **inconclusive**. Written by `vlprune results` from "
             "docs/results/claims.json.", "",
             "| claim | paper | a | b | metric | a − b [95% CI] | tolerance | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        if e["verdict"] == "not measured":
            lines.append(f"| {e['claim']} | {e['paper']} | | | | | | not measured: needs {e['needs']} |")
            continue
        a, b = e["a"], e["b"]
        lines.append(f"| {e['claim']} | {e['paper']} | {a['label']}: {a['mean']:.4f} ({a['vision_gflops']:.3f} "
                     f"GFLOPs) | {b['label']}: {b['mean']:.4f} ({b['vision_gflops']:.3f} GFLOPs) | {e['metric']} | "
                     f"{e['difference']:+.4f} [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}] | "
                     f"{_band(e['tolerance'])} | **{e['verdict']}** |")
    return "\n".join(lines) + "\n"


def write_claims(out_dir: Path, store: Path, only: str | None = None) -> list[dict]:
    """Decide every claim (or ``only`` that id, keeping the others' recorded entries) and write
    ``out_dir/claims.json`` and ``claims.md``."""
    path = out_dir / "claims.json"
    recorded = {e["id"]: e for e in json.loads(path.read_text())} if path.is_file() else {}
    entries = [decide(c, store) if only in (None, c.id) else recorded[c.id] for c in claims()]
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=1) + "\n")
    (out_dir / "claims.md").write_text(render(entries))
    return entries


def stale_claims(out_dir: Path) -> list[str]:
    """Claims whose recorded runs no longer match: another spec (configs changed), other weights, a claim
    missing from the file, or a page that does not re-render byte-identically from the JSON."""
    path = out_dir / "claims.json"
    if not path.is_file():
        return [f"{path} is missing"]
    recorded = {e["id"]: e for e in json.loads(path.read_text())}
    problems = []
    for claim in claims():
        entry = recorded.get(claim.id)
        if entry is None:
            problems.append(f"{claim.id}: not in {path}")
        elif claim.a is not None:
            specs = [{k: v for k, v in entry[side].items() if k in asdict(spec)} for side, spec in
                     (("a", claim.a), ("b", claim.b))]
            if specs != [asdict(claim.a), asdict(claim.b)]:
                problems.append(f"{claim.id}: its spec changed since it was measured")
            current = sorted({weights_sha256(spec.model) for spec in (claim.a, claim.b)})
            if entry["weights_sha256"] != current:
                problems.append(f"{claim.id}: measured on other weights than the shipped ones")
    if (out_dir / "claims.md").read_text() != render(list(recorded.values())):
        problems.append(f"{out_dir / 'claims.md'} does not re-render from {path}")
    return problems + stale_pages(out_dir)


def stale_pages(out_dir: Path) -> list[str]:
    """Results pages (``STEM.json`` with the ``model_sha256`` of the bundled models they measured) whose models
    have changed since: their numbers describe other weights until their script is re-run."""
    problems = []
    for path in sorted(out_dir.glob("*.json")):
        recorded = json.loads(path.read_text())
        shas = recorded.get("model_sha256") if isinstance(recorded, dict) else None
        changed = sorted(name for name, sha in (shas or {}).items() if weights_sha256(name) != sha)
        if changed:
            problems.append(f"{path.with_suffix('.md')}: measured on other {', '.join(changed)} weights than the "
                            "shipped ones (re-run its script)")
    return problems
