"""Config files and their loader: ``--config FILE.py[:VARIANT]``.

    python -m experiments.mnist --config experiments/configs/paper/lenet5.py --workdir ...
    python -m experiments.progressive \\
        --config experiments/configs/beyond/lenet5_val_250x.py:filters16_conv1_10_global ...

``paper/`` holds the paper's recipes, ``beyond/`` one file per recipe family. A file
defines ``get_config(arg: str = "") -> dict`` (big_vision's convention): the part of the
spec after ``:`` picks a variant, each a small override of the family's base.

A file is imported by path (``importlib``), not by module name: ``--config`` takes any
file, a user's own outside this package included. The files of this package import
each other by name (``from experiments.configs.paper import lenet5``). What
:func:`read` returns is built afresh (new dicts and lists all the way down), so a
caller that edits it cannot change a file's constants for the next read.

Starting points are declared, not written as paths: a string
``"recipe:<file>[:<variant>]#<part>"`` (see :func:`recipe`) is the folder ``<part>`` of
that recipe's run, resolved on reading to the repo-relative path
``experiments/results/<stem>[_<variant>]/<part>``, which is where the recipe's own
command (the first line of its file) writes. To rerun a recipe from scratch, run the
recipe it starts from first. The CLIs run from the repo root.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

CONFIGS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(CONFIGS_DIR))
RESULTS = "experiments/results"  # relative to the repo root

_RECIPE = re.compile(r"recipe:(?P<file>[\w/]+?)(?::(?P<variant>\w+))?(?:#(?P<part>[\w/.]+))?")



# A progressive stage's `teacher` that names the previous stage's pruned model, resolved
# by experiments.stages.run (the path does not exist until that stage has run).
PREVIOUS_STAGE = "previous_stage"


def rerun_last_stage(spec: dict[str, Any], pretrained: str, **changes: Any) -> dict[str, Any]:
    """A progressive config of ``spec``'s last stage alone, with ``changes`` to its fields,
    warm-started from ``pretrained`` (e.g. an earlier stage's ``pruned/``).

    How a config reruns one stage of a chain with another recipe (see
    ``experiments/configs/beyond/lenet300_100_val.py:60x_*``).
    """
    return {
        "base": {**spec.get("base", {}), "pretrained": pretrained},
        "stages": [{**spec["stages"][-1], **changes}],
    }

def recipe(file: str, variant: str = "", part: str = "") -> str:
    """The declared starting point ``"recipe:<file>[:<variant>]#<part>"``.

    ``file`` is relative to experiments/configs, without ``.py`` (``"paper/lenet5"``);
    ``part`` a folder of its run (``"dense"``, ``"stage_3/pruned"``).
    """
    return f"recipe:{file}" + (f":{variant}" if variant else "") + (f"#{part}" if part else "")


def results_dir(file: str, variant: str = "") -> str:
    """Where the recipe ``file[:variant]`` writes its run, relative to the repo root:
    ``experiments/results/<stem>[_<variant>]``."""
    if not os.path.isfile(os.path.join(CONFIGS_DIR, file + ".py")):
        raise ValueError(
            f"recipe {file!r}: no experiments/configs/{file}.py (expected e.g. 'paper/lenet5')"
        )
    stem = os.path.basename(file)
    return f"{RESULTS}/{stem}_{variant}" if variant else f"{RESULTS}/{stem}"


def resolve(value: Any) -> Any:
    """A copy of ``value`` (new dicts and lists) with every ``"recipe:..."`` string
    replaced by its repo-relative path."""
    if isinstance(value, Mapping):
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if isinstance(value, str) and value.startswith("recipe:"):
        match = _RECIPE.fullmatch(value)
        if not match:
            raise ValueError(
                f"{value!r} is not a recipe reference; expected 'recipe:<file>[:<variant>]#<part>'"
            )
        path = results_dir(match["file"], match["variant"] or "")
        return f"{path}/{match['part']}" if match["part"] else path
    return value


def variant(arg: str, variants: Mapping[str, Callable[[], dict[str, Any]]]) -> dict[str, Any]:
    """``variants[arg]()``; ValueError naming ``arg`` and the known variants."""
    if arg not in variants:
        known = ", ".join(repr(k) for k in variants)
        raise ValueError(f"unknown variant {arg!r}; this file has {known}")
    return variants[arg]()


def split_spec(spec: str) -> tuple[str, str]:
    """``"FILE.py:VARIANT"`` -> ``(FILE.py, VARIANT)``; no ``:`` -> ``(spec, "")``."""
    path, sep, arg = spec.rpartition(":")
    if sep and path.endswith(".py") and "/" not in arg:
        return path, arg
    return spec, ""


def read(spec: str) -> dict[str, Any]:
    """The dict ``get_config(VARIANT)`` in ``FILE.py`` returns for ``spec = FILE.py[:VARIANT]``,
    starting points resolved (any keys: the progressive and search drivers read theirs
    too); ValueError naming what is wrong."""
    path, arg = split_spec(spec)
    if not os.path.isfile(path):
        raise ValueError(f"--config {path!r} is not a file")
    try:
        module_spec = importlib.util.spec_from_file_location("_admmjax_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except Exception as err:
        raise ValueError(
            f"--config {path}: running it failed: {type(err).__name__}: {err}"
        ) from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ValueError(f"--config {path} defines no get_config() function")
    try:
        values = get_config(arg) if arg else get_config()
    except (ValueError, TypeError) as err:
        raise ValueError(f"--config {spec}: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(
            f"--config {spec}: get_config() returned {type(values).__name__}, not a dict"
        )
    return resolve(values)


def commands(path: str) -> list[str]:
    """The commands (``python -m ...``, one per variant) a config file starts with."""
    lines = []
    with open(path) as f:
        for line in f:
            if not line.startswith("# python -m "):
                break
            lines.append(line[2:].rstrip("\n"))
    return lines


def command_spec(command: str) -> str:
    """The ``--config`` spec of a command line (``NAME=`` of a sweep recipe dropped)."""
    words = command.split()
    if "--config" not in words[:-1]:
        raise ValueError(f"{command!r} has no --config SPEC")
    spec = words[words.index("--config") + 1]
    return spec.partition("=")[2] or spec


def load(spec: str) -> dict[str, Any]:
    """:func:`read`, for a single run: fields of ``train.Config`` only; ValueError
    naming what is wrong."""
    # Imported here: train imports mnist (through macs), which imports this module.
    from experiments import train

    values = read(spec)
    unknown = set(values) - {f.name for f in dataclasses.fields(train.Config)}
    if unknown:
        raise ValueError(f"config {spec} sets unknown fields {sorted(unknown)}")
    return values
