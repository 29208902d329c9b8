"""experiments/results and the repo: no absolute machine paths in any tracked file; every
command in results/README.md names a config spec that loads and inputs that exist; the
paper's committed models re-evaluate to their summaries' accuracy (real MNIST)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from experiments import configs, evaluate

REPO = Path(__file__).resolve().parents[2]
README = REPO / "experiments" / "results" / "README.md"
# A path from the root of the machine that wrote a file (written so that this file has none).
ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:work|tmp|home|opt|root)/")
ABSOLUTE_BYTES = re.compile(ABSOLUTE.pattern.encode())
# Where an absolute-looking string is not a machine path: .gitignore patterns are
# repo-relative, and the bench requirements name the wheel folder pip reads offline.
# (Both spelt in pieces, so that this file passes its own test.)
ALLOWED = {".gitignore": "/" + "tmp/", "requirements-bench.txt": "--find-links /" + "opt/wheels"}


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout.split(b"\0")
    return [REPO / n.decode() for n in names if n and (REPO / n.decode()).is_file()]


def test_no_tracked_file_holds_an_absolute_machine_path():
    found = []
    for path in _tracked_text_files():
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary: a text header inside may still hold one (sparse
            # exports' metadata); chance matches in compressed bytes are ~1e-12 per byte
            match = ABSOLUTE_BYTES.search(data)
            if match:
                context = data[match.start() : match.start() + 80]
                found.append(f"{path.relative_to(REPO)}: byte {match.start()}: {context!r}")
            continue
        text = data.decode("utf-8", errors="replace")
        allowed = ALLOWED.get(path.relative_to(REPO).as_posix())
        for number, line in enumerate(text.splitlines(), 1):
            if ABSOLUTE.search(line) and not (allowed and allowed in line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert not found, "absolute paths (write them relative to the repo):\n" + "\n".join(found)


def test_the_path_pattern_finds_what_it_should():
    assert ABSOLUTE.search('"workdir": "/work' + '/main/experiments/results/lenet5"')
    assert ABSOLUTE.search("--out /root" + "/out/x.json")
    assert not ABSOLUTE.search("experiments/results/lenet5 workdirs/tmp/run ~/tmp/x")


def _readme_commands() -> list[str]:
    text = README.read_text()
    return re.findall(r"python -m experiments\.\w+[^`\n|]*", text)


def test_results_readme_is_short_and_every_command_names_a_config_that_loads():
    assert len(README.read_text().splitlines()) <= 200
    commands = _readme_commands()
    specs = [s.partition("=")[2] or s for c in commands for s in re.findall(r"--config (\S+)", c)]
    assert len(specs) >= 20
    for spec in specs:
        if "NAME" in spec:  # the template row of a table of variants
            path, arg = configs.split_spec(spec)
            assert configs.read(f"{path}:{arg.replace('NAME', 'slowest_rho')}")
        else:
            assert configs.read(spec), spec


def test_results_readme_commands_read_inputs_that_exist():
    """evaluate / export / shrink / storage commands name committed run folders."""
    readers = ("evaluate", "export", "shrink", "storage")
    inputs = [
        word
        for c in _readme_commands()
        if c.split()[2].removeprefix("experiments.") in readers
        for word in c.split()[3:]
        if word.startswith("experiments/results/")
    ]
    assert inputs
    for path in inputs:
        assert (REPO / path).is_dir(), path


@pytest.mark.parametrize("run", ["lenet300_100", "lenet5"])
def test_paper_models_re_evaluate_to_their_summary_accuracy(run, mnist_dir):
    workdir = REPO / "experiments" / "results" / run
    summary = json.loads((workdir / "summary.json").read_text())
    out = evaluate.evaluate_workdir(str(workdir), mnist_dir)
    assert out["test_accuracy"] == pytest.approx(summary["pruned_accuracy"], abs=1e-9)
    assert out["compression"] == pytest.approx(summary["compression"])


@pytest.mark.data
def test_committed_gpt_re_evaluates_to_its_summary_bits_per_char():
    workdir = REPO / "experiments" / "results" / "gpt_kjv"
    summary = json.loads((workdir / "summary.json").read_text())
    out = evaluate.evaluate_workdir(str(workdir))
    # The run used one device, the tests four: the sums differ in the last float32 bits.
    assert out["test_bits_per_char"] == pytest.approx(summary["pruned_bits_per_char"], rel=1e-6)
    assert out["compression"] == pytest.approx(summary["compression"])


def test_single_run_commands_match_their_committed_workdirs():
    """Each shipped experiments.mnist command whose workdir is committed is the same run
    (the workdir's saved config, paths included, equals the spec's): rerunning it resumes."""
    from experiments import command_line, train

    checked = []
    for path in sorted((REPO / "experiments" / "configs").glob("*/*.py")):
        for command in configs.commands(str(path)):
            words = command.split()
            workdir = words[words.index("--workdir") + 1]
            if words[2] == "experiments.mnist" and (REPO / workdir / "config.json").is_file():
                cfg = train.Config(**configs.load(configs.command_spec(command)))
                command_line.check_workdir(cfg, str(REPO / workdir))
                checked.append(workdir)
    assert len(checked) == 5, checked  # the two paper models and the three lenet5_targets
