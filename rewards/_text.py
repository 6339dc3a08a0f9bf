"""Turn one completion, in any shape a trainer hands over, into its text.

Kept dependency-free so every reward module can import it without cycles.
"""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> str:
    """Return the text of a completion.

    Accepts a plain string, ``None`` (a missing completion reads as ``""`` so
    that it scores like an empty answer rather than crashing the batch), a
    chat message ``{"role": ..., "content": ...}``, or a chat list of such
    messages, in which case the last message is the model's reply. Message
    content may itself be a list of parts (``{"type": "text", "text": ...}``);
    their text is joined.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)):
        return completion_text(completion[-1]) if completion else ""
    if isinstance(completion, dict):
        if "content" not in completion:
            raise TypeError(f"chat message has no 'content' key: keys are {sorted(completion)}")
        content = completion["content"]
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return completion_text(content)
    raise TypeError(
        f"a completion must be a str, a chat message dict or a list of them, "
        f"got {type(completion).__name__}"
    )
