"""configs/umt.py: the variants, and the lock that makes a misspelt field fail."""

import pytest
from run_testdata import load_config


def test_config_is_locked_and_variants_differ():
    assert load_config("l16").model.variant == "l16"
    config = load_config("b16")
    with pytest.raises(AttributeError, match="peak_lr"):
        config.optimizer.peak_lrr = 1.0
    with pytest.raises(ValueError, match="choose b16, l16 or demo"):
        load_config("b32")
