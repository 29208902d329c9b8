"""The README's quickstart runs as printed and the CI script runs the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_quickstart_runs_and_prunes_exactly(capsys):
    code = README.split("## Quickstart", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 16
    namespace: dict = {}
    exec(compile(code, "README quickstart", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "| Dense_0/kernel | 784x300 | 235,200 | 9,408 | 4.00% | 25.0x |" in printed
    assert int((namespace["params"]["Dense_0"]["kernel"] != 0).sum()) == 9_408


def test_ci_runs_the_readme_test_command():
    setup = README.split("## Set up and run", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in setup.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2  # one runs the main job, one runs the tests
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()
    assert re.search(r"pytest", commands[1]) and "experiments.mnist" in commands[0]


def test_readme_option_table_is_the_schemas():
    """The README's option table is the one the schema generates, row for row."""
    from experiments import config, mnist

    parser = mnist.build_parser()
    table = config.markdown_table(parser)
    assert table in README, "README's option table differs from config.markdown_table"
    flags = [max(a.option_strings, key=len) for a in parser._actions if a.option_strings]
    missing = [f for f in flags if f != "--help" and f"| `{f}` |" not in README]
    assert not missing, f"README's CLI table lacks {missing}"


def test_readme_gpt_table_is_the_committed_report():
    """The README's GPT table is experiments/results/oneshot_lm/table.md, as
    ``python -m experiments.prune_lm --report`` wrote it."""
    table = (REPO / "experiments" / "results" / "oneshot_lm" / "table.md").read_text()
    assert table.strip() in README
