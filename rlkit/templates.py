"""Prompt templates, shared by the recipes, the data loader and the tiny base's pretraining corpus."""

# DeepSeek-R1-Zero (arXiv 2501.12948, Table 1), verbatim but for the {prompt} slot.
R1_ZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>. User: {prompt}. Assistant:"
)

TEMPLATES = {"r1_zero": R1_ZERO, "plain": "{prompt}"}


def apply_template(name_or_format: str, prompt: str) -> str:
    """Fill a named template (``r1_zero``, ``plain``) or a literal format string containing ``{prompt}``."""
    fmt = TEMPLATES.get(name_or_format, name_or_format)
    if "{prompt}" not in fmt:
        raise ValueError(
            f"prompt template {name_or_format!r} is neither a known name ({sorted(TEMPLATES)}) "
            "nor a format string with a {prompt} slot"
        )
    return fmt.replace("{prompt}", prompt)
