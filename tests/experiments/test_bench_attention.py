"""Smoke test of the attention benchmark: tiny sizes, every implementation, files written."""

import json
import os

from experiments import bench_attention


def test_benchmark_runs_and_skips_over_budget(tmp_path):
    out = tmp_path / "bench"
    results = bench_attention.main(["--lengths", "32", "--dtypes", "float32", "--passes", "fwd+bwd", "--causal", "1",
                                    "--heads", "2", "--head-dim", "8", "--repeats", "1", "--roof-size", "128",
                                    "--budget-gib", "0.00001", "--out", str(out)])
    rows = results["rows"]
    assert {r["implementation"] for r in rows} == set(bench_attention.IMPLEMENTATIONS)
    # The budget is below every path's compiled temporary memory: nothing may be executed.
    assert all(r["status"] == "skipped (memory)" and r["temp_bytes"] > 0 for r in rows)
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    assert "skipped (memory)" in (out / "summary.md").read_text()
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_benchmark_times_rows_and_reports_ratio(tmp_path):
    results = bench_attention.main(["--lengths", "16", "--dtypes", "float32", "--passes", "fwd", "--causal", "0",
                                    "--heads", "2", "--head-dim", "8", "--repeats", "1", "--roof-size", "128",
                                    "--implementations", "jax_nn_xla,attnjax_blockwise", "--out", str(tmp_path)])
    by_name = {r["implementation"]: r for r in results["rows"]}
    assert by_name["jax_nn_xla"]["ratio_to_jax_nn"] == 1.0
    assert by_name["attnjax_blockwise"]["gflops"] > 0 and by_name["attnjax_blockwise"]["status"] == "ok"
    assert results["matmul_roof_gflops"]["float32"] > 0
