"""Cost tables: fast MoPE equals the naive re-evaluation (also sharded over two ranks), baselines rank what they
claim to, rewiring keeps the function, Taylor scores are the loss derivative, module errors are clear."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vlprune
from helpers.mope_ranks import table
from helpers.tiny import tiny_clip_config
from vlprune.data.toyworld import ToyWorld
from vlprune.models.contrastive import itc_loss
from vlprune.models.layers import StructureMask
from vlprune.structured.importance import (
    CostTable,
    Module,
    every_other_layer_table,
    magnitude_table,
    modules,
    mope_table,
    neuron_groups,
    random_table,
    recall_score,
    taylor_table,
)
from vlprune.structured.rewire import rewire, taylor_importance
from vlprune.structured.towers import Pairs, encode

SCRIPT = str(Path(__file__).parent / "helpers" / "mope_ranks.py")


@pytest.fixture
def model():
    torch.manual_seed(0)
    return vlprune.build_model(tiny_clip_config(vision={"num_layers": 3})).eval()


@pytest.fixture
def batches(model, tokenizer):
    return Pairs.from_world(ToyWorld("val", image_size=32), 24, tokenizer, model).batches(10)


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_fast_mope_equals_naive(model, batches, tower):
    fast = mope_table(model, tower, batches, groups=4, fast=True)
    naive = mope_table(model, tower, batches, groups=4, fast=False)
    assert (fast.heads, fast.neuron_groups, fast.layers) == (naive.heads, naive.neuron_groups, naive.layers)
    scores = [v for row in fast.heads + fast.neuron_groups for v in row] + fast.layers
    assert any(v != 0 for v in scores)  # the masks change the recall, so the comparison has teeth


def test_mope_is_the_recall_drop_of_one_module(model, batches):
    table = mope_table(model, "vision", batches, kinds=("layer",))
    full = recall_score(encode(model, "vision", batches), encode(model, "text", batches))
    model.visual.blocks[1].structure = StructureMask(drop=True)
    dropped = recall_score(encode(model, "vision", batches), encode(model, "text", batches))
    assert table.layers[1] == pytest.approx(full - dropped)
    assert table.heads is None and table.info["z_full"] == pytest.approx(full)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mope_sharded_over_two_ranks_equals_one_process(tmp_path):
    out = tmp_path / "table.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLPRUNE_DIST_TIMEOUT": "60"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), SCRIPT, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert json.loads(out.read_text()) == table("vision")


def test_magnitude_ranks_by_weight_norm(model):
    block = model.visual.blocks[0]
    with torch.no_grad():
        block.attn.v.weight[8:16] *= 10  # head 1 (head_dim 8)
        block.mlp.fc1.weight[:16] *= 10  # group 0 of 4
    table = magnitude_table(model, "vision", groups=4)
    assert max(range(4), key=lambda h: table.heads[0][h]) == 1
    assert max(range(4), key=lambda g: table.neuron_groups[0][g]) == 0


def test_every_other_layer_removes_odd_layers_first(model):
    table = every_other_layer_table(model, "vision")
    order = sorted(range(3), key=lambda i: table.layers[i])
    assert order == [1, 2, 0] and table.heads is None


def test_random_table_is_seeded(model):
    assert random_table(model, "text", seed=3) == random_table(model, "text", seed=3)
    assert random_table(model, "text", seed=3).heads != random_table(model, "text", seed=4).heads


def test_rewiring_keeps_the_function_and_sorts_neurons(model, batches):
    before = encode(model, "vision", batches).detach()
    scores = taylor_importance(model, "vision", batches[:1])
    orders = rewire(model, "vision", scores.neurons)
    torch.testing.assert_close(encode(model, "vision", batches).detach(), before, atol=1e-6, rtol=0)
    again = taylor_importance(model, "vision", batches[:1])
    for layer, order in enumerate(orders):
        torch.testing.assert_close(again.neurons[layer], scores.neurons[layer][order], atol=1e-6, rtol=1e-4)
        assert torch.all(again.neurons[layer][:-1] >= again.neurons[layer][1:] - 1e-6)


def test_taylor_score_is_the_loss_derivative(model, batches):
    batch = batches[0]
    scores = taylor_importance(model, "vision", [batch])

    def loss_at(gate: float) -> float:
        heads = torch.ones(4, dtype=torch.float64)
        heads[2] = gate
        model.double().visual.blocks[1].structure = StructureMask(heads=heads)
        double = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
        with torch.no_grad():
            value = itc_loss(encode(model, "vision", [double]), encode(model, "text", [double]), model.logit_scale)
        model.visual.blocks[1].structure = None
        return float(value)

    eps = 1e-4
    numeric = abs(loss_at(1 + eps) - loss_at(1 - eps)) / (2 * eps)
    assert float(scores.heads[1][2]) == pytest.approx(numeric, rel=1e-3)
    table = taylor_table(model.float(), "vision", scores, groups=4)
    assert table.layers[1] == pytest.approx(float(scores.heads[1].sum() + scores.neurons[1].sum()))


def test_cost_table_json_round_trip(model, tmp_path):
    table = magnitude_table(model, "text", groups=4)
    path = table.save(tmp_path / "costs" / "text.json")
    assert CostTable.from_dict(json.loads(path.read_text())) == table


def test_unknown_module_kind_and_bad_groups_raise():
    with pytest.raises(ValueError, match="Module.kind='neuron'"):
        Module("vision", "neuron", 0)
    with pytest.raises(ValueError, match="groups=0"):
        neuron_groups(64, 0)
    with pytest.raises(ValueError, match="unknown"):
        modules(vlprune.build_model(tiny_clip_config()), "vision", ("filter",), 4)


def test_neuron_groups_partition_the_neurons():
    groups = neuron_groups(10, 4)
    assert [len(g) for g in groups] == [3, 3, 2, 2]
    assert sum(groups, []) == list(range(10))
    assert len(neuron_groups(2, 8)) == 2
