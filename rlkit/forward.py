"""Token log-probs of a causal LM over right-padded rows: the learner's forward paths.

Every path returns, for rows [N, L], the log-prob of each next token [N, L-1] under the
sampling distribution (`rlkit.algo.logprobs`: temperature, top-p), optionally its entropy, and
for an MoE the router logits and the model's load-balancing loss. They differ in what they run:

- "full": the model's own forward and its [N, L, V] logits. The reference the others are
  checked against, and the fallback for heads that are more than a projection.
- "plain": the decoder, then the output projection applied `chunk_tokens` tokens at a time
  under activation checkpointing, so no [N, L, V] buffer exists in forward or backward: memory
  per token does not grow with the vocabulary.
- "shared_prefix": rows that begin with the same tokens (the prompt template) run that prefix
  once and share its key/value cache, kept in the autograd graph.
- "tree": the rows' prefix tree packed into one sequence (every shared prefix once, no
  padding) with a tree attention mask.

`PolicyForward` wraps the model so that the learner prepares one module with accelerate:
whichever path runs, it runs inside that module's forward, so accelerate's autocast applies
to all of them and DDP sees one forward per backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rlkit.algo import entropy_from_logits
from rlkit.algo.logprobs import scaled_logits, target_logprobs
from rlkit import moe
from rlkit.models import experts_per_token
from rlkit.registry import Registry

FORWARD_PATHS = Registry("learner forward path")

CHUNK_TOKENS = 1024  # output-projection rows at a time: [CHUNK_TOKENS, V] is the largest logits buffer
MIN_SHARED_PREFIX = 16  # fewer common leading tokens than this: one plain forward is as cheap
MAX_TREE_TOKENS = 8192  # longest packed prefix tree: its [S, S] attention mask is materialised


@dataclass
class ForwardOut:
    logp: Tensor  # [N, L-1] log-prob of token t+1 at position t
    entropy: Tensor | None = None  # [N, L-1] entropy of the tempered distribution (when asked)
    aux_loss: Tensor | None = None  # scalar: the model's own (Switch-style) MoE balance loss, if it has one
    router_logits: tuple[Tensor, ...] | None = None  # per MoE layer [N*L, E], rows in full-forward order
    experts: tuple[Tensor, ...] | None = None  # per MoE layer [N*L, K]: the experts each token was routed to
    packed_tokens: int | None = None  # tokens the forward ran (the tree's size, or N*L)
    path: str = ""  # the path that produced it


class PolicyForward(nn.Module):
    """The policy as the learner trains it: `forward(input_ids, attention_mask, paths=...)` -> ForwardOut."""

    def __init__(self, model: nn.Module, *, chunk_tokens: int = CHUNK_TOKENS) -> None:
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *, temperature: float = 1.0, top_p: float = 1.0,
                entropy: bool = False, router: bool = False, paths: tuple[str, ...] = ("plain",)) -> ForwardOut:
        """The first of `paths` that applies to these rows and this model, else the full forward.

        One call is one forward as far as DDP is concerned, whichever path (or paths) it tried."""
        for path in (*paths, "full"):
            out = FORWARD_PATHS.get(path)(self, input_ids, attention_mask, temperature=temperature, top_p=top_p,
                                          entropy=entropy, router=router)
            if out is not None:
                out.path = path
                return out
        raise AssertionError("the full forward always applies")


def token_logprobs(model, input_ids: Tensor, attention_mask: Tensor, temperature: float, top_p: float = 1.0):
    """The model's full forward -> (logp [N, L-1], logits [N, L-1, V], model output). The reference."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    logits = out.logits[:, :-1, :]  # [N, L-1, V]
    return target_logprobs(logits, input_ids[:, 1:], temperature, top_p), logits, out


# ------------------------------------------------------------------------------------- paths
def _split(model):
    """(decoder, output projection), or None when the model does not expose them."""
    get_decoder = getattr(model, "get_decoder", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    decoder = get_decoder() if get_decoder is not None else None
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head


def _router_out(model, captured: moe.Captured, order, attention_mask: Tensor, out: ForwardOut) -> ForwardOut:
    """Fill the router fields from what the routers recorded; `order(t)` maps a router's tokens (in the order this
    path ran them) to full-forward row order [N*L, ...]."""
    layers = [captured.layer(i) for i in range(len(captured))]
    out.router_logits = tuple(order(logits) for logits, _ in layers)
    out.experts = tuple(order(experts) for _, experts in layers)
    out.aux_loss = moe.switch_aux_loss(model, out.router_logits, attention_mask, experts_per_token(model))
    return out


def head_logprobs(hidden: Tensor, head: nn.Module, targets: Tensor, temperature: float, top_p: float = 1.0, *,
                  entropy: bool = False, chunk_tokens: int = CHUNK_TOKENS) -> tuple[Tensor, Tensor | None]:
    """Log-probs (and entropies) of `targets` from final hidden states, `chunk_tokens` rows at a time.

    hidden [M, H], targets [M] -> logp [M], entropy [M] or None. Each chunk's logits [chunk, V]
    exist only while that chunk runs: under autograd the chunk is checkpointed, so backward
    recomputes them instead of keeping them, and the peak stays one chunk's worth of vocabulary.
    """
    def score(h: Tensor, t: Tensor):
        logits = head(h)  # [c, V]
        logp = target_logprobs(logits, t, temperature, top_p)  # [c]
        ent = entropy_from_logits(scaled_logits(logits, temperature)) if entropy else torch.zeros_like(logp)
        return logp, ent

    grad = torch.is_grad_enabled()
    logps, ents = [], []
    for start in range(0, hidden.shape[0], chunk_tokens):
        h, t = hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens]
        logp, ent = checkpoint(score, h, t, use_reentrant=False) if grad else score(h, t)
        logps.append(logp)
        ents.append(ent)
    return torch.cat(logps), (torch.cat(ents) if entropy else None)


@FORWARD_PATHS.register("full")
def _full(policy: PolicyForward, input_ids, attention_mask, *, temperature, top_p, entropy, router):
    model = policy.model
    with moe.capture(model) as captured:
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    logits = out.logits[:, :-1, :]  # [N, L-1, V]
    result = ForwardOut(logp=target_logprobs(logits, input_ids[:, 1:], temperature, top_p),
                        packed_tokens=input_ids.numel())
    if entropy:
        result.entropy = entropy_from_logits(scaled_logits(logits, temperature))
    return _router_out(model, captured, lambda t: t, attention_mask, result) if router else result


@FORWARD_PATHS.register("plain")
def _plain(policy: PolicyForward, input_ids, attention_mask, *, temperature, top_p, entropy, router):
    model = policy.model
    parts = _split(model)
    if parts is None:
        return None
    decoder, head = parts
    with moe.capture(model) as captured:
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    n, length = input_ids.shape
    hidden = out.last_hidden_state[:, :-1].reshape(n * (length - 1), -1)  # [N*(L-1), H]
    logp, ent = head_logprobs(hidden, head, input_ids[:, 1:].reshape(-1), temperature, top_p, entropy=entropy,
                              chunk_tokens=policy.chunk_tokens)
    result = ForwardOut(logp=logp.view(n, length - 1), entropy=None if ent is None else ent.view(n, length - 1),
                        packed_tokens=input_ids.numel())
    return _router_out(model, captured, lambda t: t, attention_mask, result) if router else result


def _repeatable_cache(model) -> bool:
    """Whether every layer of the model's cache can repeat its rows (linear-attention states cannot)."""
    from transformers import DynamicCache

    try:
        return all(hasattr(layer, "batch_repeat_interleave") for layer in DynamicCache(config=model.config).layers)
    except Exception:
        return False


def shared_prefix_len(input_ids: Tensor, attention_mask: Tensor) -> int:
    """Leading tokens common to every (right-padded) row, leaving each row at least one token of its own."""
    if input_ids.shape[0] < 2 or bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
        return 0  # one row, or not right-padded
    same = int((input_ids == input_ids[:1]).all(dim=0).long().cumprod(dim=0).sum())
    return max(0, min(same, int(attention_mask.sum(dim=1).min()) - 1))


@FORWARD_PATHS.register("shared_prefix")
def _shared_prefix(policy: PolicyForward, input_ids, attention_mask, *, temperature, top_p, entropy, router):
    """Rows that all begin with the same `p` tokens: the prefix runs once and its key/value cache, kept in the
    autograd graph, is shared by every row (prefix tokens count once per row in the router statistics, as in
    a full forward). No attention mask after the prefix: rows are right-padded, so under the causal mask no
    real token sees a pad."""
    model = policy.model
    p = shared_prefix_len(input_ids, attention_mask)
    parts = _split(model)
    if p < MIN_SHARED_PREFIX or parts is None or not _repeatable_cache(model):
        return None
    decoder, head = parts
    n, length = input_ids.shape
    with moe.capture(model) as captured:
        pre = decoder(input_ids=input_ids[:1, :p], use_cache=True)
        cache = pre.past_key_values
        cache.batch_repeat_interleave(n)  # differentiable: every row's gradient flows back into the one prefix pass
        positions = torch.arange(p, length, device=input_ids.device).unsqueeze(0).expand(n, -1)  # [N, L-P]
        suf = decoder(input_ids=input_ids[:, p:], position_ids=positions, past_key_values=cache, use_cache=True)
    # the prefix's hidden states once, the rows' own after it: [P-1 + N*(L-P), H] and their targets
    pre_hidden = pre.last_hidden_state[0, : p - 1]  # [P-1, H]: predicts prefix tokens 1..P-1, same in every row
    suf_hidden = torch.cat([pre.last_hidden_state[:, p - 1 :].expand(n, -1, -1), suf.last_hidden_state[:, :-1]],
                           dim=1).reshape(n * (length - p), -1)  # [N*(L-P), H]
    targets = torch.cat([input_ids[0, 1:p], input_ids[:, p:].reshape(-1)])
    logp, ent = head_logprobs(torch.cat([pre_hidden, suf_hidden]), head, targets, temperature, top_p,
                              entropy=entropy, chunk_tokens=policy.chunk_tokens)

    def rows(flat: Tensor) -> Tensor:  # [P-1 + N*(L-P)] -> [N, L-1]
        return torch.cat([flat[: p - 1].expand(n, -1), flat[p - 1 :].view(n, length - p)], dim=1)

    result = ForwardOut(logp=rows(logp), entropy=None if ent is None else rows(ent),
                        packed_tokens=p + n * (length - p))
    if router:
        def order(t: Tensor) -> Tensor:  # the prefix call's P rows, then the suffix call's N*(L-P) rows
            a, b = t[:p], t[p:]
            return torch.cat([a.reshape(1, p, -1).expand(n, -1, -1), b.reshape(n, length - p, -1)], dim=1).flatten(0, 1)

        _router_out(model, captured, order, attention_mask, result)
    return result


def prefix_tree(input_ids: Tensor, attention_mask: Tensor):
    """Pack right-padded rows into their prefix tree, every distinct prefix once.

    Returns tokens [S], depth [S] (position in its rows), node [N, L] (tree node of each row position, 0 on
    padding) and mask [S, S] (bool: node i sees node j iff j is i or one of its ancestors); None if the rows
    are not right-padded. Rows of one GRPO group share their prompt, and every row the template."""
    if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
        return None
    rows, lengths = input_ids.tolist(), attention_mask.sum(dim=1).tolist()
    index: dict[tuple[int, int], int] = {}  # (parent node, token) -> node; the root is -1
    tokens: list[int] = []
    depth: list[int] = []
    chains: list[list[int]] = []
    for row, length in zip(rows, lengths):
        parent, chain = -1, []
        for t in range(length):
            node = index.get((parent, row[t]))
            if node is None:
                node = index[(parent, row[t])] = len(tokens)
                tokens.append(row[t])
                depth.append(t)
            chain.append(node)
            parent = node
        chains.append(chain)
    device = input_ids.device
    size, width = len(tokens), input_ids.shape[1]
    node_of = torch.zeros(input_ids.shape, dtype=torch.long)
    mask = torch.zeros(size, size, dtype=torch.bool)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    for r, chain in enumerate(chains):
        c = torch.tensor(chain, dtype=torch.long)
        node_of[r, : len(chain)] = c
        mask[c.unsqueeze(1), c.unsqueeze(0)] = causal[: len(chain), : len(chain)]  # same pairs agree in every row
    return (torch.tensor(tokens, device=device), torch.tensor(depth, device=device), node_of.to(device),
            mask.to(device))


@FORWARD_PATHS.register("tree")
def _tree(policy: PolicyForward, input_ids, attention_mask, *, temperature, top_p, entropy, router):
    """The packed prefix tree. Each distinct (node, next token) pair is scored once; a tree whose attention
    would cost more than the padded batch's is declined."""
    model = policy.model
    parts = _split(model)
    if parts is None:
        return None
    tree = prefix_tree(input_ids, attention_mask)
    if tree is None:
        return None
    tokens, depth, node, mask = tree
    n, length = input_ids.shape
    size = tokens.numel()
    if size > MAX_TREE_TOKENS or size * size > n * length * length:
        return None
    decoder, head = parts
    with moe.capture(model) as captured:
        out = decoder(input_ids=tokens.unsqueeze(0), position_ids=depth.unsqueeze(0),
                      attention_mask=mask.view(1, 1, size, size), use_cache=False)
    # the node at position t predicts token t+1; rows that share both score that pair once
    src, tgt = node[:, :-1].reshape(-1), input_ids[:, 1:].reshape(-1)  # [N*(L-1)]
    pairs, where = torch.unique(torch.stack([src, tgt]), dim=1, return_inverse=True)  # [2, U], [N*(L-1)]
    logp, ent = head_logprobs(out.last_hidden_state[0, pairs[0]], head, pairs[1], temperature, top_p,
                              entropy=entropy, chunk_tokens=policy.chunk_tokens)
    result = ForwardOut(logp=logp[where].view(n, length - 1),
                        entropy=None if ent is None else ent[where].view(n, length - 1), packed_tokens=size)
    if router:
        flat = node.reshape(-1)
        _router_out(model, captured, lambda t: t.reshape(size, -1)[flat], attention_mask, result)  # [S] -> [N*L]
    return result
