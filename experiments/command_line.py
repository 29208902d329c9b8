"""What every pruning command line shares (``experiments.mnist``, ``.imagenet``, ``.lm``).

The run's :class:`~experiments.config.Config` from the defaults < ``--config`` < the
options (:func:`config_from_args`); the checks made before any work (paths,
``--pretrained`` / ``--teacher`` params of the right shapes, multi-host options, a
workdir holding another run); joining the other hosts; running and printing the
table (:func:`run_and_report`). :func:`run_checked` is a whole main built from them,
:func:`cli` the ``__main__`` wrapper. The checks raise
:class:`~experiments.schema.ConfigError` (a ``ValueError``), which the mains turn into
argparse's usage message and exit status 2; a workdir of another run raises
:class:`~experiments.workdir.WorkdirError`, which :func:`cli` reports the same way.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import textwrap
import time
from typing import Any

import jax

from admmjax import parallel
from experiments import config, configs, train
from experiments import workdir as workdir_lib
from experiments.schema import ConfigError
from experiments.workdir import WorkdirError

OUTPUTS = (
    "summary.json, table.md, history.json, weights_histograms.png, residuals_loss.png, "
    "dense/ and pruned/ (orbax params), checkpoints/"
)


def epilog(example: str) -> str:
    """The ``--help`` epilog of a pruning CLI: where values come from, the outputs, and
    ``example`` (indented command lines)."""
    return (
        "Values come from train.Config's defaults (shown), overridden by --config,\n"
        "overridden by the options given; every value is checked before any work starts.\n"
        "Outputs in WORKDIR (the final table, table.md, is also printed):\n"
        + textwrap.fill(OUTPUTS, 78, initial_indent="  ", subsequent_indent="  ")
        + "\n\nexample:\n"
        + example
    )


def config_from_args(
    args: argparse.Namespace, defaults: dict[str, str] | None = None
) -> train.Config:
    """The run's Config: train.Config's defaults < ``defaults`` (option -> value, e.g.
    another CLI's model) < the config file < the options."""
    values = configs.load(args.config) if args.config else {}
    for name, value in (defaults or {}).items():
        if getattr(args, name) is None and name not in values:
            values[name] = value
    values.update(config.cli_values(args))
    if "model" not in values:
        raise ConfigError("give --model or --config")
    if not values.get("sparsity"):
        raise ConfigError(
            "give --sparsity (e.g. 0.9, or 'fc1/kernel=0.96,fc2/kernel=0.93') or a --config "
            "that sets it"
        )
    cfg = train.Config(**values)
    config.check_values(cfg)  # types and rules of every value, before anything else
    return cfg


def run_checked(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    defaults: dict[str, str],
    check_run: Any,
) -> dict[str, Any]:
    """A pruning CLI's main: parse, ``check_run(cfg, workdir)`` (the CLI's own checks),
    join the hosts, validate, check ``--pretrained`` / ``--teacher``, then run. Every
    bad value is argparse's usage message (exit status 2) before any work."""
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args, defaults)
        check_run(cfg, args.workdir)
        join_hosts(args)  # before any JAX computation
        cfg.validate()
        for name in ("pretrained", "teacher"):
            check_params_source(cfg, name)
    except (ValueError, FileNotFoundError) as err:  # DatasetUnavailableError included
        parser.error(str(err))
    return run_and_report(cfg, args.workdir)


def cli(main: Any, build_parser: Any, argv: list[str]) -> None:
    """``main(argv)`` with a workdir that holds another run refused as a usage error."""
    try:
        main(argv)
    except WorkdirError as err:
        build_parser().error(str(err))


def check_paths(workdir: str) -> None:
    """The workdir must be a directory or not exist yet."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir {workdir!r} exists and is not a directory")


def check_params_source(cfg: train.Config, name: str) -> None:
    """``cfg.<name>`` (``pretrained`` or ``teacher``), when given, holds params of
    ``cfg.model``'s structure and shapes: compared from the checkpoint's metadata, before
    any data is loaded. An ``.npz``/``.npy`` of converted weights is checked on loading
    (``experiments.models.alexnet.load_pretrained``)."""
    path = getattr(cfg, name)
    if path is None or (os.path.isfile(path) and path.endswith((".npz", ".npy"))):
        return
    if not os.path.isdir(path):
        raise ConfigError(f"{name} {path!r} is not a directory (a workdir or a params checkpoint)")
    import orbax.checkpoint as ocp

    candidate = os.path.join(path, "dense")
    directory = os.path.abspath(candidate if os.path.isdir(candidate) else path)
    try:
        with ocp.PyTreeCheckpointer() as ckpt:
            saved = ckpt.metadata(directory).item_metadata.tree
    except Exception as err:
        raise ConfigError(
            f"{name} {path!r} holds no params checkpoint (a workdir with dense/, or a params "
            f"checkpoint directory): {type(err).__name__}: {str(err)[:200]}"
        ) from None
    expected = {
        jax.tree_util.keystr(k, simple=True, separator="/"): tuple(v.shape)
        for k, v in jax.tree_util.tree_flatten_with_path(config.abstract_params(cfg))[0]
    }
    found = {
        jax.tree_util.keystr(k, simple=True, separator="/"): tuple(v.shape)
        for k, v in jax.tree_util.tree_flatten_with_path(saved)[0]
    }
    if found != expected:
        diff = sorted(set(found.items()) ^ set(expected.items()))[:4]
        raise ConfigError(
            f"{name} {path!r} holds params that are not {cfg.model!r}'s (path, shape "
            f"differing: {diff})"
        )


def _host_value(given: Any, env: str) -> int | None:
    """A multi-host count or index: the option, else the environment variable."""
    if given is not None or not os.environ.get(env):
        return given
    try:
        return int(os.environ[env])
    except ValueError:
        raise ConfigError(f"${env} must be an integer, got {os.environ[env]!r}") from None


def join_hosts(args: argparse.Namespace) -> None:
    """Checks the multi-host options, then joins the other processes (a no-op for one).

    A process other than 0 first waits up to ``--coordinator-timeout`` seconds for the
    coordinator to accept connections and otherwise raises :class:`ConfigError` naming
    its address: past its own timeout JAX aborts the process without an exception.
    """
    num = _host_value(args.num_processes, parallel.ENV_NUM_PROCESSES)
    process_id = _host_value(args.process_id, parallel.ENV_PROCESS_ID)
    if process_id is not None and num is None:
        raise ConfigError(
            f"--process-id {process_id} needs --num-processes (or ${parallel.ENV_NUM_PROCESSES})"
        )
    if num is not None and process_id is not None and process_id >= num:
        raise ConfigError(f"--process-id {process_id} must be < --num-processes {num}")
    address = args.coordinator or os.environ.get(parallel.ENV_COORDINATOR)
    timeout = args.coordinator_timeout or config.MULTIHOST["coordinator_timeout"].default
    if address and num is not None and num > 1:
        if process_id:
            wait_for_coordinator(address, timeout)
        print(f"joining the coordinator at {address} (timeout {timeout} s)", file=sys.stderr)
    parallel.initialize(address, num, process_id, initialization_timeout=timeout)


def wait_for_coordinator(address: str, timeout: float) -> None:
    """Until ``host:port`` accepts a TCP connection; ConfigError naming it after ``timeout`` s."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--coordinator {address!r} is not host:port")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
            return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"no coordinator answered at {address} within {timeout:g} s "
                    f"({err.strerror or err}); start process 0 first or fix --coordinator"
                ) from None
            time.sleep(0.2)


def check_workdir(cfg: train.Config, workdir: str) -> None:
    """Refuses a workdir holding another run (model, data or recipe): experiments.workdir."""
    workdir_lib.saved_run(cfg, workdir)


def run_and_report(cfg: train.Config, workdir: str) -> dict[str, Any]:
    """Refuses another run's workdir, runs (or resumes) ``cfg``, prints its table."""
    check_workdir(cfg, workdir)
    summary = train.run(cfg, workdir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "table.md")) as f:
            print(f.read().rstrip())
        print(f"\nOutputs in {os.path.abspath(workdir)}: {OUTPUTS}.")
    return summary
