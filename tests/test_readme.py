"""The README's two commands are the ones CI and users run."""

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
