"""Prompt templates, shared by the recipes, the data loader and the tiny base's pretraining corpus.

A template is a name (``r1_zero``, ``plain``), a format string with a ``{prompt}`` slot, or ``chat``:
the tokenizer's own chat template (instruct and R1-distilled models), with an optional system
message, the assistant turn opened, and ``<think>`` opened for the model where its template is a
reasoning model's. ``chat:<name or format>`` first puts the question through that template and
sends the result as the user's message.

What a template writes after the assistant turn opens (``<think>\\n``) is the start of the reply:
``render_prompt`` returns it as the response prefix, which is put back in front of each sampled
completion before the rewards see it, so ``think_format`` still finds the opening tag.
"""

from __future__ import annotations

from typing import Any

# DeepSeek-R1-Zero (arXiv 2501.12948, Table 1), verbatim but for the {prompt} slot.
R1_ZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>. User: {prompt}. Assistant:"
)

TEMPLATES = {"r1_zero": R1_ZERO, "plain": "{prompt}"}
CHAT = "chat"
THINK_OPEN = "<think>"
THINK_MODES = ("auto", "always", "never")


def apply_template(name_or_format: str, prompt: str, *, tokenizer: Any = None, system_prompt: str = "",
                   think: str = "auto") -> str:
    """Fill a named template (``r1_zero``, ``plain``), a literal format string containing ``{prompt}``, or
    ``chat``/``chat:<template>`` (needs the `tokenizer`): the whole prompt text, response prefix included."""
    return render_prompt(name_or_format, prompt, tokenizer=tokenizer, system_prompt=system_prompt, think=think)[0]


def render_prompt(name_or_format: str, prompt: str, *, tokenizer: Any = None, system_prompt: str = "",
                  think: str = "auto") -> tuple[str, str]:
    """(prompt text, response prefix): the text the model continues, and the part of it that belongs to
    the reply (``"<think>\\n"`` when the turn is opened with it, else "")."""
    if name_or_format == CHAT or name_or_format.startswith(CHAT + ":"):
        user = prompt
        if name_or_format != CHAT:
            user = _fill(name_or_format[len(CHAT) + 1:], prompt)
        return chat_prompt(tokenizer, user, system_prompt=system_prompt, think=think)
    if system_prompt:
        raise ValueError(f"a system prompt needs template=chat (the tokenizer's chat template), "
                         f"not {name_or_format!r}")
    return _fill(name_or_format, prompt), ""


def _fill(name_or_format: str, prompt: str) -> str:
    fmt = TEMPLATES.get(name_or_format, name_or_format)
    if "{prompt}" not in fmt:
        raise ValueError(
            f"prompt template {name_or_format!r} is neither a known name ({', '.join(sorted(TEMPLATES))}, chat) "
            "nor a format string with a {prompt} slot"
        )
    return fmt.replace("{prompt}", prompt)


def chat_prompt(tokenizer: Any, user: str, *, system_prompt: str = "", think: str = "auto") -> tuple[str, str]:
    """The tokenizer's chat template with the assistant turn opened; `think` (auto | always | never) opens
    the reply with <think> too: `auto` does where the template is a reasoning model's (it handles
    </think>), as DeepSeek-R1's distilled models are meant to be prompted."""
    if think not in THINK_MODES:
        raise ValueError(f"think={think!r}: choose one of {', '.join(THINK_MODES)}")
    if tokenizer is None:
        raise ValueError("template=chat needs the model's tokenizer")
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or "this model"
        raise ValueError(f"template=chat: the tokenizer of {name} has no chat template (a base model?); "
                         "use template=r1_zero or a format string with {prompt}")
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": user})
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # jinja raises on roles a template refuses (e.g. no system role)
        hint = " (leave data.system_prompt empty)" if system_prompt else ""
        raise ValueError(f"template=chat: the tokenizer's chat template failed: {err}{hint}") from None
    stripped = text.rstrip()
    if stripped.endswith(THINK_OPEN):  # the template opens the reasoning itself (DeepSeek-R1 distills, QwQ)
        return text, text[len(stripped) - len(THINK_OPEN):]
    if think == "always" or (think == "auto" and is_reasoning_template(tokenizer)):
        return text + THINK_OPEN + "\n", THINK_OPEN + "\n"
    return text, ""


def is_reasoning_template(tokenizer: Any) -> bool:
    """A chat template that knows about </think> (it strips earlier turns' reasoning, or switches it off):
    the model writes its reasoning in <think> ... </think> first."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # several named templates
        template = " ".join(str(t) for t in template.values())
    return "</think>" in str(template)
