"""One training run from plain arguments: model (fresh, or initialised from a checkpoint), data (``--data``: the
toy world, a Karpathy split or webdataset shards), objective, trainer, and the final model saved as a vlprune
checkpoint. ``vlprune train`` calls this."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vlprune.config import ConfigError
from vlprune.data.pairs import Collate, open_pairs
from vlprune.data.sources import DataSpec, parse_data
from vlprune.data.toyworld import toy_tokenizer
from vlprune.distributed import env_world_size, rank
from vlprune.method_registry import parse_method
from vlprune.models.io import (
    CheckpointError,
    Model,
    build_model,
    load,
    load_state_strict,
    load_tokenizer,
    resolve,
    save,
)
from vlprune.reduce.base import apply, token_schedule
from vlprune.registry import list_models, model_config
from vlprune.train.momentum import MomentumQueue
from vlprune.train.objectives import Objective
from vlprune.train.scene import SceneProbes
from vlprune.train.trainer import TrainConfig, Trainer


def initial_model(model: str, init_from: str | None = None, init_parts: tuple[str, ...] = (), seed: int = 0) -> Model:
    """A registered architecture (random init) or a checkpoint; optionally copy parts from another checkpoint.

    ``init_parts`` are state-dict prefixes (e.g. ``visual``) copied from ``init_from``: ALBEF-style
    initialisation of a fusion model's image tower from a pretrained one.
    """
    torch.manual_seed(seed)
    net = build_model(model_config(model)) if model in list_models() and not Path(model).is_dir() else load(model)
    if init_from is None:
        return net
    source = load(init_from).state_dict()
    target = net.state_dict()
    parts = init_parts or tuple({k.split(".")[0] for k in target})
    picked = {k: v for k, v in source.items() if k.split(".")[0] in parts}
    if not picked:
        raise CheckpointError(f"{init_from} has no weights under {list(parts)}")
    load_state_strict(net, {**target, **picked}, str(init_from))
    return net


def check_pairs_per_rank(objective: Objective, config: TrainConfig, twins: int, momentum_queue: int) -> None:
    """Refuse, before step 1, a batch in which a contrastive task has nothing to contrast: with one pair per
    rank and micro-batch, in-batch ITC has loss and gradient exactly 0 and ITM finds no hard negative."""
    per_micro = config.batch_size // (env_world_size() * config.grad_accum)
    pairs = per_micro * (twins + 1)
    queue_only = momentum_queue > 0 and "itm" not in objective.tasks
    if objective.needs_negatives() and not queue_only and pairs < 2:
        raise ConfigError(f"--batch-size {config.batch_size} gives {pairs} pair per rank and micro-batch "
                          f"({env_world_size()} rank(s), grad_accum {config.grad_accum}, twins {twins}): tasks "
                          f"{sorted({'itc', 'itm'} & set(objective.tasks))} need at least 2 to contrast; raise "
                          "--batch-size (or --twins, or use --momentum-queue for ITC)")


TOY_TASKS = ("vqa", "scene", "ground", "ground_object")
"""Tasks that need the toy world's questions, answers or scene labels; real image-caption data has none."""


def check_toy_only(tasks: dict[str, float], twins: int, spec: DataSpec) -> None:
    """Refuse, before anything is built, a toy-only task or ``--twins`` on real data."""
    if spec.kind == "toyworld":
        return
    toy_only = [t for t in tasks if t in TOY_TASKS]
    if toy_only:
        raise ConfigError(f"--tasks {','.join(toy_only)} need the toy world's questions and scene labels; --data "
                          f"{spec.text} has image-caption pairs only: train it with itc, itm or mlm")
    if twins:
        raise ConfigError(f"--twins {twins}: hard-negative twins exist only in the toy world, not in --data "
                          f"{spec.text}; drop --twins")


def record_method(net, method: str, out_dir: Path) -> None:
    """``OUT/method.json``: the method the run trains with (its full config, every default spelt out) and the
    token schedule it gives this model, so a run says what it did."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = net.reduction
    record = {"method": method, "config": config.to_dict() if config is not None else None,
              "token_schedule": [list(pair) for pair in token_schedule(net)]}
    (out_dir / "method.json").write_text(json.dumps(record, indent=1) + "\n")


def train(model: str, out_dir: str | Path, tasks: dict[str, float], config: TrainConfig, *,
          data: str = "toyworld:train", train_size: int | None = None, method: str = "none",
          init_from: str | None = None, init_parts: tuple[str, ...] = (), momentum_queue: int = 0,
          momentum: float = 0.995, twins: int = 0, scene_loss: str = "mean", until: int | None = None,
          workers: int = 0) -> Path:
    """Train on ``data`` (a ``--data`` spec, default the toy world's train split; ``train_size``: its first that
    many pairs); returns the directory of the saved final model.

    Real data (``karpathy:``: every caption a pair with its image, split ``train`` unless the spec names one;
    ``wds:``: every sample a pair, read by seeking into the shards, ``vlprune.data.shards``) trains ``itc``,
    ``itm`` and ``mlm``; images go through the model's preprocessing and captions through the checkpoint's
    tokenizer, cut to its context as CLIP / open_clip training does (a toy-world caption longer than the context
    stays an error: the model is mis-sized). Ranks and DataLoader workers split each global batch
    (``vlprune.train.trainer.rank_batch_indices``), and a checkpoint's step is the data position.

    ``momentum_queue > 0`` turns on ITC with a momentum encoder and a queue of that many embeddings.
    ``method`` (e.g. ``elip``, ``tome:r=4``) trains with token reduction on; the saved model holds only the
    weights (as ELIP's downstream models, it evaluates unpruned unless a method is applied again).
    Task ``scene`` adds the toy world's per-cell attribute probes (``vlprune.train.scene``); they are trained
    and checkpointed with the run but not saved with the model; ``scene_loss`` is how their losses are averaged
    (``vlprune.train.scene.SCENE_LOSSES``). ``twins`` puts that many hard-negative twins
    beside every scene (``ToyWorld.family``). ``until`` stops after that step (``Trainer.fit``); the model is
    saved as it stands then. ``workers`` DataLoader processes build the batches ahead (``Trainer``); the result
    does not depend on it.
    """
    spec = parse_data(data)
    objective = Objective(tasks)
    check_toy_only(tasks, twins, spec)
    check_pairs_per_rank(objective, config, twins, momentum_queue)
    net = initial_model(model, init_from, init_parts, config.seed)
    apply(net, parse_method(method)[1])
    net.train()
    trained = MomentumQueue(net, momentum_queue, momentum) if momentum_queue else net
    trained = SceneProbes(trained, net.config, scene_loss) if "scene" in tasks else trained
    try:
        tokenizer = load_tokenizer(resolve(model))
    except CheckpointError:
        tokenizer = toy_tokenizer(net.config.text.max_length)
    dataset = open_pairs(spec, net.config.vision.image_size, train_size, twins)
    collate = Collate(tokenizer, net.config.vision, truncate=spec.kind != "toyworld")
    trainer = Trainer(trained, objective, dataset, collate, config, out_dir, workers=workers)
    if rank() == 0:
        record_method(net, method, Path(out_dir))
    trainer.fit(resume=True, until=until)
    final = Path(out_dir) / "model"
    if rank() == 0:
        save(net, final, tokenizer)
    return final
