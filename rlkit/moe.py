"""MoE specifics in one place: the routers, what they chose, balance losses, bias balancing, replay.

Every transformers MoE names its router class in `_can_record_outputs["router_logits"]`, and
those routers return (router_logits [T, E], gate weights [T, K], chosen experts [T, K]): a
softmax router (Qwen3-MoE, Mixtral, OLMoE: gates = softmax over the chosen K) or a sigmoid router
(DeepSeek-V3, with an `e_score_correction_bias` added for the choice only and gates from the
plain sigmoid scores). `instrument(model)` puts one forward hook on each router, through which:

- `capture(model)` records (logits, chosen experts) of every router call of one forward;
- `replay(model, routes)` makes every router choose given experts (routing replay: the
  rollout's choices in the learner's forward), with gate weights recomputed from the current
  logits over the replayed set, so gradients still reach the router; the router's own choice
  is kept where a token has no record (-1), and how often it differs from the record is counted.

Balance: the softmax routers' Switch-style auxiliary loss is the model's own
`load_balancing_loss_func`; the sigmoid routers get DeepSeek-V3's sequence-wise balance loss
(`sequence_balance_loss`) and auxiliary-loss-free balancing (`BiasBalancer`: after each
optimizer step every routed expert's bias moves by `speed` toward balance). Shared experts are
not routed and appear in none of these statistics.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


def router_class(model) -> type | None:
    """The class whose instances route tokens in `model` (None for a dense model)."""
    recorders = getattr(type(model), "_can_record_outputs", None) or {}
    recorder = recorders.get("router_logits")
    if recorder is None:
        return None
    return recorder if isinstance(recorder, type) else getattr(recorder, "target_class", None)


def routers(model) -> list[nn.Module]:
    """The router modules of `model`, in layer order ([] for a dense model)."""
    cls = router_class(model)
    return [] if cls is None else [m for m in model.modules() if type(m) is cls]


def check_options(model_path: str, algo, *, trust_remote_code: bool = False) -> None:
    """Refuse MoE options the policy cannot honour, before any actor starts. The model is built on the
    meta device from its config: its modules are inspected, no weights are read."""
    balancing = algo.bias_balance_speed > 0 or algo.seq_balance_coef > 0
    if not (algo.routing_replay or balancing):
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    found = routers(model)
    if algo.routing_replay and not found:
        raise ValueError(f"algo.routing_replay: {model_path} is a dense model ({type(model).__name__}, no MoE routers)")
    if balancing and not (found and all(is_sigmoid_router(r) for r in found)):
        what = "a dense model" if not found else f"routed by {type(found[0]).__name__}, which has no routing bias"
        raise ValueError(f"algo.bias_balance_speed / algo.seq_balance_coef need DeepSeek-V3-style routers with a "
                         f"routing bias; {model_path} is {what} (its balance loss is algo.router_aux_coef)")


def is_sigmoid_router(router: nn.Module) -> bool:
    return hasattr(router, "e_score_correction_bias")


def gate_weights(router: nn.Module, logits: Tensor, experts: Tensor) -> Tensor:
    """Gate weights [T, K] of `experts` [T, K] from router logits [T, E], as the router computes them."""
    logits = logits.float()
    if is_sigmoid_router(router):
        weights = logits.sigmoid().gather(1, experts)
        if getattr(router, "norm_topk_prob", False):
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * getattr(router, "routed_scaling_factor", 1.0)
    weights = torch.softmax(logits, dim=-1).gather(1, experts)
    if getattr(router, "norm_topk_prob", False):
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights


@dataclass
class RouterState:
    """What the hook of one router records or replays (set by `capture` / `replay`)."""

    layer: int  # index among the model's routers
    calls: list | None = None  # while capturing: (logits [T, E], experts [T, K]) per call
    replay: Tensor | None = None  # [T, K] long experts to use, -1 rows: the router's own choice
    differ: list = field(default_factory=lambda: [0, 0])  # replayed tokens whose own choice differed, compared


def _hook(module: nn.Module, inputs, output):
    state: RouterState | None = getattr(module, "_rlkit_router", None)
    if state is None or not isinstance(output, tuple) or len(output) != 3:
        return None
    logits, weights, experts = output
    if state.replay is not None:
        replay = state.replay.to(experts.device)
        if replay.shape[0] != experts.shape[0]:
            raise RuntimeError(f"routing replay: router {state.layer} saw {experts.shape[0]} tokens, "
                               f"the recorded routes cover {replay.shape[0]}")
        recorded = replay[:, 0] >= 0  # [T]
        if bool(recorded.any()):
            own = experts.sort(dim=-1).values
            chosen = torch.where(recorded[:, None], replay, experts)  # [T, K]
            with torch.no_grad():
                state.differ[0] += int((own != chosen.sort(dim=-1).values).any(dim=-1)[recorded].sum())
                state.differ[1] += int(recorded.sum())
            weights = torch.where(recorded[:, None], gate_weights(module, logits, chosen).to(weights.dtype), weights)
            experts = chosen
            output = (logits, weights, experts)
    if state.calls is not None:
        state.calls.append((logits, experts))
    return output


def instrument(model) -> list[nn.Module]:
    """Put the recording/replay hook on every router of `model` (once); returns the routers."""
    found = routers(model)
    for layer, router in enumerate(found):
        if getattr(router, "_rlkit_router", None) is None:
            router._rlkit_router = RouterState(layer)
            router.register_forward_hook(_hook)
    return found


@dataclass
class Captured:
    """Router calls of one forward, per router layer: logits [T_c, E] and experts [T_c, K] per call."""

    calls: list[list[tuple[Tensor, Tensor]]]

    def layer(self, layer: int) -> tuple[Tensor, Tensor]:
        """All calls of one router concatenated in call order: logits [T, E], experts [T, K]."""
        logits, experts = zip(*self.calls[layer])
        return torch.cat(logits), torch.cat(experts)

    def __len__(self) -> int:
        return len(self.calls)


@contextlib.contextmanager
def capture(model):
    """Record every router call made inside the block (nothing is recorded outside it, e.g. by a
    checkpointed forward recomputed in backward)."""
    found = instrument(model)
    for router in found:
        router._rlkit_router.calls = []
    result = Captured([])
    try:
        yield result
    finally:
        result.calls = [router._rlkit_router.calls for router in found]
        for router in found:
            router._rlkit_router.calls = None


def set_replay(model, routes: Tensor | None) -> None:
    """Make the routers choose `routes` [T, layers, K] (token order of the forward's flattened batch; -1: the
    router's own choice) until called again; None stops replaying. Stays on through backward, so a
    checkpointed forward recomputes with the same experts."""
    found = instrument(model)
    if routes is not None and routes.shape[1] != len(found):
        raise ValueError(f"routing replay: routes for {routes.shape[1]} MoE layers, the model has {len(found)}")
    for layer, router in enumerate(found):
        router._rlkit_router.replay = None if routes is None else routes[:, layer].long()


def replay_mismatch(model, reset: bool = True) -> float | None:
    """Share of replayed (token, layer) pairs whose own choice differed from the replayed experts."""
    differ = total = 0
    for router in instrument(model):
        d, t = router._rlkit_router.differ
        differ, total = differ + d, total + t
        if reset:
            router._rlkit_router.differ = [0, 0]
    return differ / total if total else None


def route_mismatch(experts: tuple[Tensor, ...], routes: Tensor, attention_mask: Tensor) -> float | None:
    """Share of recorded (token, layer) pairs where `experts` (per layer [N*L, K]) differ as a set from
    `routes` [N, L, layers, K] (-1: not recorded)."""
    rec = routes.flatten(0, 1).long()  # [N*L, layers, K]
    valid = (rec[:, 0, 0] >= 0) & attention_mask.reshape(-1).bool()  # [N*L]
    if not bool(valid.any()):
        return None
    differ = sum(int((own.sort(dim=-1).values != rec[:, layer].to(own.device).sort(dim=-1).values)
                     .any(dim=-1)[valid].sum()) for layer, own in enumerate(experts))
    return differ / (int(valid.sum()) * len(experts))


def _touch_parameters(module: nn.Module, inputs, output):
    # a zero that depends on one element of every parameter of the block: each gets a (zero) gradient
    zero = sum(p.reshape(-1)[:1].sum() for p in module.parameters() if p.requires_grad) * 0.0
    if isinstance(output, Tensor):
        return output + zero
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return (output[0] + zero, *output[1:])
    return None


def give_every_expert_a_gradient(model) -> int:
    """Make every parameter of each MoE block that keeps its experts as separate modules take part in
    the backward, with a zero gradient where the block's tokens chose none of an expert's; returns how
    many blocks needed it. Sharded training (FSDP) reduces gradients of a unit's parameters as one
    buffer whose layout must agree on every rank; an expert idle on one rank alone would break it.
    Experts held fused in one tensor (transformers 5's own MoE classes) need nothing."""
    names = {id(m): name for name, m in model.named_modules()}
    parents = {name: m for name, m in model.named_modules()}
    done = 0
    for router in routers(model):
        block = parents.get(names[id(router)].rpartition(".")[0])
        experts = getattr(block, "experts", None)
        if isinstance(experts, nn.ModuleList) and not getattr(block, "_rlkit_touch", False):
            block.register_forward_hook(_touch_parameters)
            block._rlkit_touch = True
            done += 1
    return done


# ------------------------------------------------------------------------------- balance
def switch_aux_loss(model, router_logits: tuple[Tensor, ...], attention_mask: Tensor, top_k: int) -> Tensor | None:
    """The model's own Switch-style load-balancing loss (softmax routers), None where its module has none."""
    fn = getattr(sys.modules.get(type(model).__module__), "load_balancing_loss_func", None)
    if fn is None or not router_logits:
        return None
    return fn(router_logits, router_logits[0].shape[-1], top_k, attention_mask)


def sequence_balance_loss(router_logits: tuple[Tensor, ...], experts: tuple[Tensor, ...], attention_mask: Tensor,
                          top_k: int) -> Tensor:
    """DeepSeek-V3's sequence-wise balance loss for sigmoid routers, averaged over layers and sequences.

    Per sequence of T real tokens and layer: sum_i f_i * P_i with f_i = E / (K T) * (tokens that chose
    expert i) and P_i = mean over its tokens of s_i / sum_j s_j (s = sigmoid scores). 1.0 when balanced.
    router_logits / experts: per layer [N*L, E] / [N*L, K] in row order; attention_mask [N, L].
    """
    n, length = attention_mask.shape
    mask = attention_mask.float()  # [N, L]
    tokens = mask.sum(dim=1).clamp(min=1)  # [N]
    losses = []
    for logits, chosen in zip(router_logits, experts):
        num_experts = logits.shape[-1]
        scores = logits.float().sigmoid().view(n, length, num_experts)
        share = scores / scores.sum(dim=-1, keepdim=True)  # [N, L, E]
        p = (share * mask[..., None]).sum(dim=1) / tokens[:, None]  # [N, E]
        hits = torch.zeros(n, length, num_experts, device=logits.device)
        hits.scatter_(2, chosen.view(n, length, -1), 1.0)
        f = (hits * mask[..., None]).sum(dim=1) * num_experts / (top_k * tokens[:, None])  # [N, E]
        losses.append((f.detach() * p).sum(dim=1).mean())
    return torch.stack(losses).mean()


def expert_loads(experts: tuple[Tensor, ...], attention_mask: Tensor, num_experts: int) -> Tensor:
    """Tokens routed to each expert: per layer [N*L, K] choices -> [layers, E] counts over real tokens."""
    valid = attention_mask.reshape(-1).bool()
    return torch.stack([torch.bincount(chosen[valid].reshape(-1), minlength=num_experts).float()
                        for chosen in experts])


def load_metrics(loads: Tensor) -> dict[str, float]:
    """loads [layers, E] -> `moe/load_max` (busiest expert / the mean, 1 = balanced), `moe/load_cv`,
    averaged over layers, and the same per layer (`moe/layer_{i}/load_max`)."""
    mean = loads.mean(dim=1).clamp(min=1e-9)  # [layers]
    peak = loads.max(dim=1).values / mean  # [layers]
    cv = loads.std(dim=1, unbiased=False) / mean  # [layers]
    out = {"moe/load_max": float(peak.mean()), "moe/load_cv": float(cv.mean())}
    for i, (p, c) in enumerate(zip(peak.tolist(), cv.tolist())):
        out[f"moe/layer_{i}/load_max"] = p
        out[f"moe/layer_{i}/load_cv"] = c
    return out


class BiasBalancer:
    """Auxiliary-loss-free balancing (DeepSeek-V3): after each optimizer step, each routed expert's
    routing bias moves by `speed` toward balance, down for experts above the mean load, up below it.
    The bias only shifts which experts are chosen; the gate weights use the unbiased scores."""

    def __init__(self, model, speed: float) -> None:
        self.routers = instrument(model)
        missing = [i for i, r in enumerate(self.routers) if not is_sigmoid_router(r)]
        if not self.routers or missing:
            raise ValueError("aux-loss-free balancing needs routers with a routing bias (DeepSeek-V3's "
                             "e_score_correction_bias); this model's routers have none")
        self.speed = speed
        self.loads: Tensor | None = None  # [layers, E] tokens per expert since the last update

    def add(self, loads: Tensor) -> None:
        self.loads = loads.detach().clone() if self.loads is None else self.loads + loads.detach()

    @torch.no_grad()
    def update(self, all_reduce=None) -> None:
        """Move the biases; `all_reduce` sums the loads over ranks first, so every rank moves the same way."""
        if self.loads is None:
            return
        loads = all_reduce(self.loads) if all_reduce is not None else self.loads
        for router, load in zip(self.routers, loads):
            bias = router.e_score_correction_bias
            bias += self.speed * torch.sign(load.mean() - load).to(bias.device, bias.dtype)
        self.loads = None
