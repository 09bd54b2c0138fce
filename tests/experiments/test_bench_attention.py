"""Smoke test of the attention benchmark: tiny sizes, every implementation, files written, config checks."""

import json
import os
import subprocess
import sys

import pytest

from experiments.bench import attention as bench_attention
from experiments.bench import attention_config as bench_config


def _config(tmp_path, **overrides):
    c = bench_config.get_config()
    c.update(dict(lengths="32", dtypes="float32", passes="fwd+bwd", causal="1", heads=2, head_dim=8, repeats=1,
                  roof_size=128, out=str(tmp_path)))
    c.update(overrides)
    return c


def test_benchmark_runs_and_skips_over_budget(tmp_path):
    results = bench_attention.run(_config(tmp_path, budget_gib=0.00001,
                                          implementations=",".join(bench_attention.IMPLEMENTATIONS)))
    rows = results["rows"]
    assert {r["implementation"] for r in rows} == set(bench_attention.IMPLEMENTATIONS)
    # The budget is below every path's compiled temporary memory: nothing may be executed.
    assert all(r["status"] == "skipped (memory)" and r["temp_bytes"] > 0 for r in rows)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    assert "skipped (memory)" in (tmp_path / "summary.md").read_text()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_benchmark_times_rows_and_reports_ratio(tmp_path):
    results = bench_attention.run(_config(tmp_path, lengths="16", passes="fwd", causal="0",
                                          implementations="jax_nn_xla,attnjax_blockwise"))
    by_name = {r["implementation"]: r for r in results["rows"]}
    assert by_name["jax_nn_xla"]["ratio_to_jax_nn"] == 1.0
    assert by_name["attnjax_blockwise"]["gflops"] > 0 and by_name["attnjax_blockwise"]["status"] == "ok"
    assert results["matmul_roof_gflops"]["float32"] > 0


@pytest.mark.parametrize("override, message", [("implementations=flash", "unknown implementation 'flash'"),
                                               ("passes=bwd", "unknown pass 'bwd'"),
                                               ("causal=2", "config.causal must be in")])
def test_bad_config_is_a_usage_error_before_compiling(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        bench_attention.check_config(_config(tmp_path, **dict([override.split("=")])))
    proc = subprocess.run([sys.executable, "-m", "experiments.bench.attention", f"--config.{override}",
                           f"--config.out={tmp_path}"], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not os.listdir(tmp_path)
