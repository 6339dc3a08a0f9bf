"""The word-level tokenizer of the tiny base model.

A WordPiece model whose vocabulary is every whole word of the texts it is built from, plus
one token per digit (``7``) and per continuing digit (``##7``). So "85" is two tokens,
``8 ##5``, arithmetic is learnable digit by digit, and the WordPiece decoder glues the
continuation back: decode gives "85", never "8 5". Words are split on whitespace and
punctuation (BERT pre-tokenizer), so the R1-Zero template costs one token per word or mark.

The reasoning tags are ordinary (non-special) added tokens: one id each, and they survive
``decode(..., skip_special_tokens=True)``, which the answer extractor depends on.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
TAGS = ("<think>", "</think>", "<answer>", "</answer>")
DIGITS = tuple("0123456789")


def build_tokenizer(texts: Iterable[str], model_max_length: int = 256) -> PreTrainedTokenizerFast:
    """A tokenizer whose vocabulary covers every word of ``texts`` (plus digits and tags).

    Ids are assigned deterministically: specials, tags, digits, continuing digits, then the
    other words sorted, so the same texts always give the same ids.
    """
    pre = pre_tokenizers.BertPreTokenizer()
    words: set[str] = set()
    for text in texts:
        for chunk in _split_tags(text):
            if chunk in TAGS:
                continue
            words.update(w for w, _ in pre.pre_tokenize_str(chunk))
    # Numbers are spelled with digit tokens, never learned as whole words.
    words = {w for w in words if not w.isdigit()}
    vocab_list = [PAD, EOS, UNK, *TAGS, *DIGITS, *(f"##{d}" for d in DIGITS), *sorted(words - set(TAGS))]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}

    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, continuing_subword_prefix="##"))
    tok.pre_tokenizer = pre
    # No clean-up of spaces before punctuation: decoding a corpus text gives it back verbatim.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=model_max_length,
    )
    # Added after the vocabulary exists so they map onto the ids reserved above.
    fast.add_tokens(list(TAGS))
    return fast


def _split_tags(text: str) -> list[str]:
    """Split ``text`` around the reasoning tags, keeping the tags as their own chunks."""
    out, rest = [], text
    while rest:
        hits = [(rest.find(t), t) for t in TAGS if t in rest]
        if not hits:
            out.append(rest)
            break
        pos, tag = min(hits)
        if pos:
            out.append(rest[:pos])
        out.append(tag)
        rest = rest[pos + len(tag) :]
    return out
