"""Weight-map PNGs: written atomically, valid PNG files, bad input rejected."""

import numpy as np
import pytest

from attnjax.plots import plot_weight_maps


def test_writes_a_png_per_call_and_leaves_no_temp_files(tmp_path):
    w = np.random.default_rng(0).random((3, 4, 5))
    path = plot_weight_maps(w, tmp_path / "maps.png", titles=["a", "b", "c"], query_labels=list("abcd"),
                            key_labels=list("vwxyz"), suptitle="test")
    data = (tmp_path / "maps.png").read_bytes()
    assert path.endswith("maps.png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    plot_weight_maps(w[0], tmp_path / "single.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.png", "single.png"]


@pytest.mark.parametrize("weights,kwargs,word", [
    (np.zeros((2, 2, 2, 2)), {}, "weights"),
    (np.full((2, 2), np.nan), {}, "finite"),
    (np.zeros((2, 3, 3)), {"titles": ["only one"]}, "titles"),
    (np.zeros((3, 3)), {"key_labels": ["a"]}, "key_labels"),
])
def test_bad_input_is_rejected(tmp_path, weights, kwargs, word):
    with pytest.raises(ValueError, match=word):
        plot_weight_maps(weights, tmp_path / "x.png", **kwargs)
    with pytest.raises(ValueError, match="png"):
        plot_weight_maps(np.zeros((2, 2)), tmp_path / "x.jpg")
