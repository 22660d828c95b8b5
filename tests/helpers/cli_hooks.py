"""``vlprune`` (``vlprune.cli.main``) with two test hooks, for tests/test_train_real_data.py; run it directly or
under ``torchrun``, with the CLI's arguments.

* ``VLPRUNE_TEST_SEEN_DIR=D``: every micro-batch a rank's trainer consumes is logged to
  ``D/batches-rank{r}-{pid}.jsonl`` (``step``, ``micro``, ``indices``), and every webdataset sample read (in the
  training process or a DataLoader worker) to ``D/samples-rank{r}-{pid}.jsonl`` (``index``, ``key``).
* ``VLPRUNE_TEST_KILL_AT_STEP=k``: the process SIGKILLs itself at the start of step ``k``'s objective.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from vlprune.cli import main
from vlprune.data.shards import ShardIndex
from vlprune.train.objectives import Objective
from vlprune.train.trainer import MicroBatches


def _log(name: str, record: dict) -> None:
    rank = os.environ.get("RANK", "0")
    with (Path(os.environ["VLPRUNE_TEST_SEEN_DIR"]) / f"{name}-rank{rank}-{os.getpid()}.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


def _record() -> None:
    load_batch, load_sample = MicroBatches.__getitem__, ShardIndex.__getitem__

    def batch(self, key):
        out = load_batch(self, key)
        _log("batches", {"step": key[0], "micro": key[1], "indices": out["index"].tolist()})
        return out

    def sample(self, index):
        _log("samples", {"index": index, "key": self.keys[index]})
        return load_sample(self, index)

    MicroBatches.__getitem__, ShardIndex.__getitem__ = batch, sample


def _kill_at(step: int) -> None:
    objective = Objective.__call__

    def call(self, model, batch, ctx):
        if ctx.step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return objective(self, model, batch, ctx)

    Objective.__call__ = call


if __name__ == "__main__":
    if os.environ.get("VLPRUNE_TEST_SEEN_DIR"):
        _record()
    if os.environ.get("VLPRUNE_TEST_KILL_AT_STEP"):
        _kill_at(int(os.environ["VLPRUNE_TEST_KILL_AT_STEP"]))
    sys.exit(main(sys.argv[1:]))
