"""Model merging: the weighted average of the tensors, checked tensor by tensor."""

from __future__ import annotations

import pytest
import torch

from rlkit.merge import MergeError, merge_checkpoints, merge_state_dicts

from ..conftest import build_random_tiny_model


def test_merge_is_the_weighted_average_of_each_tensor():
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([10.0]), "ids": torch.tensor([0, 1])}
    b = {"w": torch.tensor([[5.0, 6.0], [7.0, 8.0]]), "b": torch.tensor([20.0]), "ids": torch.tensor([0, 1])}
    m = merge_state_dicts([a, b], [0.25, 0.75])
    # 0.25 * 1 + 0.75 * 5 = 4; 0.25 * 10 + 0.75 * 20 = 17.5
    assert m["w"].tolist() == [[4.0, 5.0], [6.0, 7.0]]
    assert m["b"].tolist() == [17.5]
    assert m["ids"].tolist() == [0, 1] and m["ids"].dtype == torch.long
    assert merge_state_dicts([a, b], [1.0, 0.0])["w"].equal(a["w"])
    three = merge_state_dicts([a, b, a], [0.5, 0.25, 0.25])
    assert three["b"].tolist() == [12.5]  # 5 + 5 + 2.5


def test_merge_refuses_what_cannot_be_averaged():
    a = {"w": torch.ones(2)}
    with pytest.raises(MergeError, match="sum to 1"):
        merge_state_dicts([a, a], [0.5, 0.6])
    with pytest.raises(MergeError, match="shape"):
        merge_state_dicts([a, {"w": torch.ones(3)}], [0.5, 0.5])
    with pytest.raises(MergeError, match="different tensors"):
        merge_state_dicts([a, {"v": torch.ones(2)}], [0.5, 0.5])
    with pytest.raises(MergeError, match="integer tensor"):
        merge_state_dicts([{"i": torch.tensor([1])}, {"i": torch.tensor([2])}], [0.5, 0.5])


def test_merged_checkpoint_is_the_average_of_two_models(tmp_path):
    from transformers import AutoModelForCausalLM

    a = build_random_tiny_model(tmp_path / "a", seed=1)
    b = build_random_tiny_model(tmp_path / "b", seed=2)
    out = merge_checkpoints([a, b], [0.3, 0.7], tmp_path / "merged")
    ma, mb, mm = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (a, b, out))
    assert set(mm) == set(ma)
    for name, t in mm.items():
        assert torch.allclose(t, 0.3 * ma[name] + 0.7 * mb[name], atol=1e-6), name
    assert not torch.equal(ma["model.embed_tokens.weight"], mb["model.embed_tokens.weight"])  # really two models
    assert (out / "tokenizer.json").exists()


def test_merging_different_architectures_is_refused(tmp_path):
    a = build_random_tiny_model(tmp_path / "a", seed=1)
    c = build_random_tiny_model(tmp_path / "c", seed=1, num_experts=2)
    with pytest.raises(MergeError, match="not the same architecture|shape"):
        merge_checkpoints([a, c], [0.5, 0.5], tmp_path / "x")
