import pytest

from rlkit.registry import Registry


def test_register_get_and_names():
    reg = Registry("advantage estimator")

    @reg.register("grpo")
    def grpo():
        return "g"

    reg.register("rloo", lambda: "r")
    assert reg.get("grpo") is grpo
    assert reg.get("rloo")() == "r"
    assert reg.names() == ["grpo", "rloo"]
    assert "grpo" in reg and "ppo" not in reg
    assert len(reg) == 2


def test_unknown_name_error_names_kind_bad_name_and_choices():
    reg = Registry("loss aggregation")
    reg.register("token_mean", object())
    reg.register("seq_mean", object())
    with pytest.raises(KeyError) as err:
        reg.get("tokn_mean")
    msg = str(err.value)
    assert "loss aggregation" in msg and "'tokn_mean'" in msg
    assert "seq_mean, token_mean" in msg


def test_duplicate_registration_is_an_error_unless_override():
    reg = Registry("KL estimator")
    reg.register("k1", 1)
    with pytest.raises(ValueError, match="'k1' is already registered"):
        reg.register("k1", 2)
    reg.register("k1", 3, override=True)
    assert reg.get("k1") == 3
