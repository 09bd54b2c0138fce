"""The README's two commands are the ones CI and users run."""

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bash_blocks():
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_opens_with_main_job_and_tests():
    main_job, tests = _bash_blocks()[:2]
    assert "python -m experiments.length_generalization" in main_job
    assert "pip install" in main_job and "pip install" in tests
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command():
    tests = _bash_blocks()[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), f"README test command {tests!r} is not a line of .ci/run"


def _python_blocks():
    return re.findall(r"```python\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_quickstart_trains_short_and_evaluates_long(capsys):
    """The tour's train-short -> evaluate-long example runs as written and scores every test length."""
    [quickstart] = [block for block in _python_blocks() if "evaluate_lengths(" in block]
    assert len(quickstart.splitlines()) <= 20
    namespace = {}
    exec(compile(quickstart, "README.md quickstart", "exec"), namespace)
    scores, history = namespace["scores"], namespace["history"]
    assert sorted(scores) == list(range(1, 17))
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["count"] > 0 for r in scores.values())
    assert history[-1]["loss"] < history[0]["loss"]
    assert capsys.readouterr().out.startswith("{1: ")


def test_implementation_table_lists_every_name_dot_product_attention_accepts():
    from attnjax.ops.dot_product import IMPLEMENTATION_ALIASES, IMPLEMENTATIONS

    readme = (ROOT / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `\"") or line.startswith("| `None`")]
    listed = set(re.findall(r'`"(\w+)"`', "\n".join(row.split(" | ")[0] for row in table)))
    assert set(IMPLEMENTATION_ALIASES) <= listed, listed
    assert set(IMPLEMENTATIONS) - {"pallas_interpret"} <= listed, listed


def _field_rows():
    """One README row per config value of the attention models: its fields with their defaults."""
    import dataclasses

    import numpy as np

    from attnjax.nn import Execution, TransformerConfig
    from attnjax.nn.transformer_lm import TransformerLMConfig
    from attnjax.nn.vit1d import ViT1DConfig
    from attnjax.ops import AttentionConfig

    def row(label, cls, base=None):
        inherited = {f.name: f.default for f in dataclasses.fields(base)} if base else {}
        shown = [f for f in dataclasses.fields(cls) if f.name != "attention" and inherited.get(f.name, f) != f.default]
        text = lambda v: np.dtype(v).name if isinstance(v, type) else repr(v)  # noqa: E731 - dtypes by name
        return f"| {label} | " + ", ".join(f"`{f.name}={text(f.default)}`" for f in shown) + " |"

    return [row("`TransformerConfig`: the architecture", TransformerConfig),
            row("`attention=AttentionConfig(...)` (or a name, or a dict)", AttentionConfig),
            row("`execution=Execution(...)`: how it runs", Execution),
            row("`TransformerLMConfig` adds", TransformerLMConfig, TransformerConfig),
            row("`ViT1DConfig` adds or changes", ViT1DConfig, TransformerConfig)]


def test_model_config_table_lists_every_field_with_its_default():
    readme = (ROOT / "README.md").read_text()
    missing = [row for row in _field_rows() if row not in readme]
    assert not missing, "README's model config table is stale; its rows should be:\n" + "\n".join(_field_rows())


def test_flex_benchmark_table_is_the_committed_runs():
    from experiments.bench.attention import flex_table
    runs = [json.loads((ROOT / "results" / "bench" / name / "results.json").read_text())
            for name in ("flex_causal", "flex_bidirectional")]
    block = (ROOT / "README.md").read_text().split("<!-- bench: flex -->\n")[1].split("\n<!-- /bench -->")[0]
    assert block == flex_table(*runs)
