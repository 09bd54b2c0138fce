"""The config checks every study shares: number lists with bounds, tuples of ints, and the kind of every model a
study's cells build."""

import pytest

from attnjax import sweep


def test_numbers_checks_bounds_and_emptiness_only_when_asked():
    assert sweep.numbers("64, 128", int, "widths", low=1) == [64, 128]
    assert sweep.numbers("", int, "noise_sweep") == []  # no bounds: an empty list is a choice
    assert sweep.numbers(0, int, "validation_size", low=0, high=3999) == [0]
    with pytest.raises(ValueError, match="config.widths lists no int"):
        sweep.numbers("", int, "widths", low=1)
    with pytest.raises(ValueError, match=r"config.widths must be >= 1, got '64,0'"):
        sweep.numbers("64,0", int, "widths", low=1)
    with pytest.raises(ValueError, match=r"config.train_sizes must be in \[1, 3500\], got '250,4000'"):
        sweep.numbers("250,4000", int, "train_sizes", low=1, high=3500)
    with pytest.raises(ValueError, match="config.widths must be comma-separated ints, got '64,wide'"):
        sweep.numbers("64,wide", int, "widths", low=1)  # parsing comes first


def test_int_tuples_of_any_size():
    assert sweep.int_tuples("64:4, 128:8", "settings", "seq_len:kv") == [(64, 4), (128, 8)]
    assert sweep.int_tuples("32x40x40,8x1x2", "decode_setting", "BxPxT", "x", size=3) == [(32, 40, 40), (8, 1, 2)]
    assert sweep.int_tuples("", "decode_setting", "BxPxT", "x", size=3) == []
    for bad in ("32x40", "32x0x4", "32x4x4x4", "axbxc"):
        with pytest.raises(ValueError, match="config.decode_setting must be comma-separated BxPxT"):
            sweep.int_tuples(bad, "decode_setting", "BxPxT", "x", size=3)


def test_check_kind_builds_every_cell_config_and_names_a_model_of_another_kind():
    sweep.check_kind("classifier", {"cnn": [dict(channels=(4,), kernel_sizes=(3,), pooling="mean")],
                                    "mlp": [dict(hidden_sizes=(8,))]})
    with pytest.raises(ValueError, match=r"model 'cnn' must be a classifier model here: \[B, L\] -> \[B, C\]"):
        sweep.check_kind("classifier", {"cnn": [dict(pooling="mean"), dict(pooling=None)]})  # one cell per-position
    with pytest.raises(ValueError, match="must be a seq2seq model here"):
        sweep.check_kind("seq2seq", {"gru": [{}]})
    with pytest.raises((ValueError, TypeError), match="d_model"):  # what a cell sets can make a bad config
        sweep.check_kind("sequence", {"transformer_lm": [dict(d_model=63, num_heads=2)]})
