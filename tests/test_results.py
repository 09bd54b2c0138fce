"""Result files: a failure mid-write leaves neither a partial file nor a temp file; the environment record."""

import json
import os

import pytest

from attnjax import results as reporting


def test_write_json_and_text_roundtrip(tmp_path):
    reporting.write_json(tmp_path / "sub" / "r.json", {"a": [1, 2.5]})
    assert json.loads((tmp_path / "sub" / "r.json").read_text()) == {"a": [1, 2.5]}
    reporting.write_text(tmp_path / "s.md", "| a |\n")
    assert (tmp_path / "s.md").read_text() == "| a |\n"


def test_failure_mid_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "results.json"
    # json.dump streams: "a" is written before the unserializable value raises.
    with pytest.raises(TypeError):
        reporting.write_json(path, {"a": "x" * 10_000, "b": object()})
    assert os.listdir(tmp_path) == []
    reporting.write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        reporting.write_json(path, {"a": "x" * 10_000, "b": object()})
    assert json.loads(path.read_text()) == {"ok": 1}  # old content intact
    assert os.listdir(tmp_path) == ["results.json"]


def test_interrupt_mid_write_leaves_old_file(tmp_path):
    path = tmp_path / "summary.md"
    reporting.write_text(path, "old")

    def writer(f):
        f.write("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reporting.write_with(path, writer)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["summary.md"]


def test_save_figure_writes_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    reporting.save_figure(tmp_path / "p.png", fig)
    plt.close(fig)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_environment_info_has_versions_and_devices():
    env = reporting.environment_info()
    assert env["jax"] and env["flax"] and env["optax"] and env["device_count"] == len(env["devices"]) >= 1
    assert env["git_commit"] is None or len(env["git_commit"].split("+")[0]) == 40


def test_results_module_imports_neither_flax_nor_optax():
    import subprocess
    import sys

    code = ("import sys, attnjax.results as r; r.environment_info(); "
            "assert 'flax' not in sys.modules and 'optax' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
