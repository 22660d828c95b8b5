"""Retrieval, zero-shot and VQA metrics on hand-made cases with answers worked out by hand."""

import pytest
import torch

from vlprune import retrieval
from vlprune.eval.vqa import vqa_accuracy, vqa_accuracy_by_type
from vlprune.eval.zeroshot import zeroshot_classifier, zeroshot_metrics
from vlprune.retrieval import rerank_topk, retrieval_metrics

# 3 images x 5 texts; texts 0,1 -> image 0, texts 2,3 -> image 1, text 4 -> image 2.
SIM = torch.tensor([
    [0.9, 0.1, 0.8, 0.2, 0.3],
    [0.5, 0.7, 0.6, 0.1, 0.2],
    [0.4, 0.8, 0.1, 0.3, 0.9],
])
OWNER = [0, 0, 1, 1, 2]


def test_retrieval_hand_made():
    m = retrieval_metrics(SIM, OWNER, ks=(1, 2, 3))
    # text -> image ranks (negatives >= positive): t0 0, t1 2, t2 1, t3 2, t4 0
    assert m["image_retrieval_recall@1"] == pytest.approx(2 / 5)
    assert m["image_retrieval_recall@2"] == pytest.approx(3 / 5)
    assert m["image_retrieval_recall@3"] == pytest.approx(1.0)
    # image -> text ranks (best positive): img0 0, img1 1 (text 1 at 0.7 beats 0.6), img2 0
    assert m["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert m["text_retrieval_recall@2"] == pytest.approx(1.0)
    assert m["mean_recall"] == pytest.approx((0.4 + 0.6 + 1 + 2 / 3 + 1 + 1) / 6)
    assert not any(key.startswith("semantic") for key in m)


def test_retrieval_ties_are_pessimistic():
    m = retrieval_metrics(torch.ones(2, 2), [0, 1], ks=(1, 2))
    assert m["image_retrieval_recall@1"] == 0.0 and m["text_retrieval_recall@1"] == 0.0
    assert m["image_retrieval_recall@2"] == 1.0 and m["text_retrieval_recall@2"] == 1.0
    # Two positives tied with each other (both above every negative) are still a hit at 1.
    sim = torch.tensor([[0.7, 0.7, 0.1], [0.2, 0.3, 0.9]])
    assert retrieval_metrics(sim, [0, 0, 1], ks=(1,))["text_retrieval_recall@1"] == 1.0
    # Text 0's image ties image 1 and beats image 2: rank 1, a miss at 1 and a hit at 2.
    sim = torch.tensor([[0.5, 0.0, 0.0], [0.5, 0.9, 0.0], [0.1, 0.0, 0.9]])
    m = retrieval_metrics(sim, [0, 1, 2], ks=(1, 2))
    assert m["image_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert m["image_retrieval_recall@2"] == 1.0


def test_retrieval_semantic():
    positives = torch.zeros(5, 3, dtype=torch.bool)
    positives[1, 2] = positives[1, 1] = positives[2, 0] = True
    m = retrieval_metrics(SIM, OWNER, ks=(1,), text_positives=positives)
    assert m["image_retrieval_recall@1"] == pytest.approx(2 / 5)  # own-image keys unchanged
    # t1's best true image is image 2 (0.8), t2's is image 0 (0.8); t3 still ranks 2.
    assert m["semantic_image_retrieval_recall@1"] == pytest.approx(4 / 5)
    # image 1 is now described by text 1 (0.7), its top text.
    assert m["semantic_text_retrieval_recall@1"] == pytest.approx(1.0)
    assert m["semantic_mean_recall"] == pytest.approx(0.9)


def _brute_force(sim, owner, k):
    hits_t2i = [int((sim[:, j] >= sim[owner[j], j]).sum()) - 1 < k for j in range(sim.shape[1])]
    hits_i2t = []
    for i in range(sim.shape[0]):
        mine = [j for j in range(sim.shape[1]) if owner[j] == i]
        best = max(sim[i, j] for j in mine)
        hits_i2t.append(sum(int(sim[i, j] >= best) for j in range(sim.shape[1]) if owner[j] != i) < k)
    return sum(hits_t2i) / len(hits_t2i), sum(hits_i2t) / len(hits_i2t)


def test_retrieval_chunked_matches_brute_force(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    sim = torch.randint(0, 6, (7, 21), generator=gen).float()  # many ties
    owner = [j // 3 for j in range(21)]
    monkeypatch.setattr(retrieval, "_CHUNK_ELEMENTS", 25)  # chunks of 1-3 rows
    m = retrieval_metrics(sim, owner, ks=(1, 3))
    for k in (1, 3):
        t2i, i2t = _brute_force(sim, owner, k)
        assert m[f"image_retrieval_recall@{k}"] == pytest.approx(t2i)
        assert m[f"text_retrieval_recall@{k}"] == pytest.approx(i2t)


def test_retrieval_validation():
    with pytest.raises(ValueError, match="4 entries.*5 texts"):
        retrieval_metrics(SIM, [0, 0, 1, 2])
    with pytest.raises(ValueError, match=r"\(5, 3\).*\(3, 5\)"):
        retrieval_metrics(SIM, OWNER, text_positives=torch.zeros(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="no text"):
        retrieval_metrics(SIM, [0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="must lie in"):
        retrieval_metrics(SIM, [0, 0, 1, 1, 3])


def test_rerank_topk():
    first = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.7, 0.1]])
    new = {(0, 0): 0.0, (0, 2): 5.0, (1, 1): -3.0, (1, 2): -4.0}
    calls = []

    def score_fn(rows, cols):
        assert rows.shape == cols.shape and rows.dim() == 1
        calls.append(len(rows))
        return torch.tensor([new[(r, c)] for r, c in zip(rows.tolist(), cols.tolist())])

    out = rerank_topk(first, 2, score_fn)
    assert out.argsort(dim=1, descending=True).tolist() == [[2, 0, 3, 1], [1, 2, 0, 3]]
    assert out[0, 2] - out[0, 0] == pytest.approx(5.0) and out[1, 1] - out[1, 2] == pytest.approx(1.0)
    assert out[0, 3] == first[0, 3] and out[1, 0] == first[1, 0]  # untouched entries keep first-stage values
    assert out[[0, 0, 1, 1], [0, 2, 1, 2]].min() > first.max()
    calls.clear()
    assert torch.equal(rerank_topk(first, 2, score_fn, batch_size=3), out)
    assert calls == [3, 1]
    with pytest.raises(ValueError, match="returned 1 scores for 4 pairs"):
        rerank_topk(first, 2, lambda r, c: torch.zeros(1))


def test_zeroshot_metrics_hand_made():
    logits = torch.tensor([
        [5.0, 1, 1, 1, 1, 1],  # label 0: rank 0
        [3.0, 2, 1, 0, 0, 0],  # label 1: rank 1 -> top-5 only
        [1.0, 0, 1, 1, 1, 1],  # label 1: rank 5 -> miss
        [0.0, 0, 1, 1, 0, 0],  # label 2: tied with class 3 -> rank 1 (pessimistic)
    ])
    m = zeroshot_metrics(logits, torch.tensor([0, 1, 1, 2]))
    assert m["acc1"] == pytest.approx(1 / 4)
    assert m["acc5"] == pytest.approx(3 / 4)
    assert m["mean_per_class_recall"] == pytest.approx((1 + 0 + 0) / 3)  # classes 0, 1, 2 present
    # With 3 classes acc5 is top-3: every sample hits.
    assert zeroshot_metrics(torch.tensor([[0.0, 1, 2]] * 2), torch.tensor([0, 1]))["acc5"] == 1.0
    with pytest.raises(ValueError, match="4 rows.*3 entries"):
        zeroshot_metrics(logits, torch.tensor([0, 1, 1]))


def test_zeroshot_classifier_averages_templates():
    table = {"a cat": [1.0, 0, 0], "the cat": [0.0, 1, 0], "a dog": [0.0, 0, 1], "the dog": [0.0, 0.6, 0.8]}
    seen = []

    def encode_text(texts):
        seen.append(texts)
        return torch.tensor([table[t] for t in texts])

    weights = zeroshot_classifier(encode_text, ["cat", "dog"], ["a {}", "the {}"])
    assert seen == [["a cat", "the cat"], ["a dog", "the dog"]]
    s = 0.5 ** 0.5
    norm = (0.3 ** 2 + 0.9 ** 2) ** 0.5
    expected = torch.tensor([[s, s, 0.0], [0.0, 0.3 / norm, 0.9 / norm]])
    assert torch.allclose(weights, expected, atol=1e-6)


def test_vqa_exact_and_soft():
    assert vqa_accuracy(["yes", "no", "2"], ["yes", "yes", "2"]) == pytest.approx(2 / 3)
    assert vqa_accuracy(["Yes "], [["yes"]]) == 1.0  # normalised, single answer -> exact match
    answers = [["cat"] * 2 + ["dog"] * 8, ["cat"] * 3 + ["dog"] * 7, ["dog"] * 10, ["cat"] * 5 + ["x"] * 5]
    # 2/3, 1, 0, 1
    assert vqa_accuracy(["cat"] * 4, answers) == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)
    by_type = vqa_accuracy_by_type(["cat"] * 4, answers, ["a", "b", "a", "b"])
    assert by_type == pytest.approx({"a": 1 / 3, "b": 1.0})
    ids = torch.tensor([[4, 4, 1, -1], [2, 2, 2, 2], [7, -1, -1, -1]])
    assert vqa_accuracy(torch.tensor([4, 2, 7]), ids) == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert vqa_accuracy(torch.tensor([4, 2]), torch.tensor([4, 3])) == 0.5
    with pytest.raises(ValueError, match="no predictions"):
        vqa_accuracy([], [])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        vqa_accuracy(["a", "b"], [["a"]])
