"""admmjax.checkpoint: snapshots at save, verification and fallback on restore (issue 22,
defects 1 and 3)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from admmjax.checkpoint import Checkpointer


def _tree(seed: int) -> dict:
    # Random weights compress badly, so a flipped byte lands in stored array bytes.
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.standard_normal((64, 32)), jnp.float32), "b": None}


def test_metadata_is_a_snapshot_taken_at_save(tmp_path):
    """Defect 1's reproduction: the caller changes its dict right after save returns,
    while the asynchronous write is in flight; no checkpoint may carry the change."""
    ckpt = Checkpointer(tmp_path / "c", max_to_keep=20)
    tree = {"w": jnp.zeros((256, 256))}
    for i in range(20):
        meta = {"step": i, "history": [i]}
        ckpt.save(i, tree, meta)
        meta["step"] = i + 1000
        meta["history"].append(-1)
    ckpt.wait()
    steps = [ckpt.metadata(i) for i in range(20)]
    ckpt.close()
    assert steps == [{"step": i, "history": [i]} for i in range(20)]


def _two_checkpoints(directory: Path) -> Checkpointer:
    ckpt = Checkpointer(directory)
    for step in (1, 2):
        ckpt.save(step, _tree(step), {"stage": "admm", "step": step})
    ckpt.wait()
    return ckpt


def _largest_file(root: Path) -> Path:
    return max((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate_json(path: Path) -> None:
    path.write_text(path.read_text()[:5])


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda d: _flip_byte(_largest_file(d / "state")), id="flipped-array-byte"),
        pytest.param(lambda d: _truncate_json(d / "meta" / "metadata"), id="truncated-metadata"),
        pytest.param(lambda d: (d / "state" / "_METADATA").unlink(), id="missing-array-index"),
        pytest.param(
            lambda d: (d / "integrity" / "metadata").write_text(
                json.dumps({"step": 1, "digests": {}})
            ),
            id="integrity-of-another-step",
        ),
    ],
)
def test_a_corrupted_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog, corrupt):
    """Defect 3: every corruption of the newest checkpoint is detected on restore, named
    in one warning line, and the previous (intact) checkpoint is restored instead."""
    ckpt = _two_checkpoints(tmp_path / "c")
    corrupt(tmp_path / "c" / "2")
    ckpt.close()
    ckpt = Checkpointer(tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="admmjax.checkpoint"):
        tree, meta = ckpt.restore(_tree(0))
    assert meta == {"stage": "admm", "step": 1}
    np.testing.assert_array_equal(np.asarray(tree["w"]), np.asarray(_tree(1)["w"]))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert "checkpoint 2" in warnings[0] and "falling back to checkpoint 1" in warnings[0]
    # The next save of step 2 replaces the corrupted one.
    ckpt.save(2, _tree(5), {"stage": "admm", "step": 2})
    tree, meta = ckpt.restore(_tree(0))
    ckpt.close()
    assert meta["step"] == 2
    np.testing.assert_array_equal(np.asarray(tree["w"]), np.asarray(_tree(5)["w"]))


def test_a_checkpoint_whose_arrays_hold_another_step_is_refused(tmp_path, caplog):
    """Arrays of one step under the metadata of another (the race of defect 1 on disk)."""
    import shutil

    ckpt = _two_checkpoints(tmp_path / "c")
    ckpt.close()
    shutil.rmtree(tmp_path / "c" / "2" / "state")
    shutil.copytree(tmp_path / "c" / "1" / "state", tmp_path / "c" / "2" / "state")
    ckpt = Checkpointer(tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="admmjax.checkpoint"):
        _, meta = ckpt.restore(_tree(0))
    ckpt.close()
    assert meta["step"] == 1
    assert "checkpoint 2: its arrays hold step 1" in caplog.text


def test_no_valid_checkpoint_is_a_clear_error(tmp_path):
    ckpt = _two_checkpoints(tmp_path / "c")
    ckpt.close()
    for step in ("1", "2"):
        _truncate_json(tmp_path / "c" / step / "meta" / "metadata")
    ckpt = Checkpointer(tmp_path / "c")
    with pytest.raises(ValueError, match=r"no valid checkpoint in .*checkpoint 2 cannot be read"):
        ckpt.restore(_tree(0))
    ckpt.close()


def test_bad_arguments_are_refused_before_any_write(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep is 1; expected an integer >= 2"):
        Checkpointer(tmp_path / "a", max_to_keep=1)
    ckpt = Checkpointer(tmp_path / "b")
    with pytest.raises(TypeError):
        ckpt.save(1, _tree(0), {"bad": object()})
    with pytest.raises(ValueError, match="step is -1"):
        ckpt.save(-1, _tree(0), {})
    assert ckpt.all_steps() == []
    ckpt.close()
