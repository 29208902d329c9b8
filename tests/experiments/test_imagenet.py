"""ImageNet without TensorFlow: a synthetic ILSVRC-2012 made here (archives in the real
layout -> TF-free prepare -> imagenet2012/5.1.0 array_record), read back through
tfds.data_source like the real one; preprocessing, deterministic batches, CLI checks,
and AlexNet through every stage of the pipeline on it."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments import configs, imagenet, macs, train
from experiments.data import imagenet as imagenet_data

REPO = Path(__file__).resolve().parents[2]
NUM_TRAIN, NUM_VAL = 320, 64
WEIGHTS_CONFIG = str(REPO / "experiments" / "configs" / "paper" / "alexnet.py") + ":weights"


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory) -> str:
    """A TFDS data dir holding a synthetic imagenet2012/5.1.0, prepared from archives
    placed in its manual dir, as the README tells users to do with the real ones."""
    data_dir = tmp_path_factory.mktemp("tfds")
    imagenet_data.write_synthetic_archives(
        imagenet_data.manual_dir(data_dir), num_train=NUM_TRAIN, num_val=NUM_VAL, num_classes=10
    )
    imagenet_data.prepare(data_dir, log=lambda _: None)
    return str(data_dir)


def test_prepared_dataset_is_tfds_imagenet2012_without_tensorflow(imagenet_dir):
    import tensorflow_datasets as tfds

    folder = Path(imagenet_dir, "imagenet2012", "5.1.0")
    assert (folder / "dataset_info.json").is_file() and (folder / "features.json").is_file()
    assert sorted(p.name for p in folder.glob("*.array_record-*")) == [
        "imagenet2012-train.array_record-00000-of-00001",
        "imagenet2012-validation.array_record-00000-of-00001",
    ]
    train_split = tfds.data_source("imagenet2012", split="train", data_dir=imagenet_dir)
    val = tfds.data_source("imagenet2012", split="validation", data_dir=imagenet_dir)
    assert (len(train_split), len(val)) == (NUM_TRAIN, NUM_VAL)
    names = train_split.dataset_info.features["label"].names
    assert len(names) == 1000
    record = train_split[5]  # decoded by tfds itself: a real JPEG image feature
    assert record["image"].dtype == np.uint8 and record["image"].shape[2] == 3
    assert min(record["image"].shape[:2]) >= 224
    assert record["file_name"].decode().startswith(names[record["label"]] + "_")
    # Validation labels come from TFDS's own validation_labels.txt, by image number.
    labels = imagenet_data._validation_labels()
    for i in (0, 17, NUM_VAL - 1):
        rec = val[i]
        number = int(rec["file_name"].decode()[len("ILSVRC2012_val_") :][:8])
        assert names[rec["label"]] == labels[number - 1]
    assert "tensorflow" not in sys.modules


def test_preprocessing_train_and_eval():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)  # h=240, w=320
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")  # lossless, not JPEG: no draft mode
    data = buf.getvalue()
    ev = imagenet_data.preprocess(data, train=False)
    resized = np.asarray(Image.fromarray(pixels).resize((341, 256), Image.BILINEAR))
    top, left = (256 - 227) // 2, (341 - 227) // 2
    np.testing.assert_array_equal(ev, resized[top : top + 227, left : left + 227])
    a = imagenet_data.preprocess(data, train=True, rng=np.random.default_rng([1, 2, 3]))
    b = imagenet_data.preprocess(data, train=True, rng=np.random.default_rng([1, 2, 3]))
    np.testing.assert_array_equal(a, b)  # a function of the seed only
    crops = [
        imagenet_data.preprocess(data, train=True, rng=np.random.default_rng([0, 0, i]))
        for i in range(8)
    ]
    assert all(c.shape == (227, 227, 3) and c.dtype == np.uint8 for c in crops)
    assert len({c.tobytes() for c in crops}) == 8
    with pytest.raises(ValueError, match="rng="):
        imagenet_data.preprocess(data, train=True)


def test_batches_are_a_function_of_seed_epoch_and_step(imagenet_dir):
    source = imagenet_data.ImageNetSource(data_dir=imagenet_dir, train_subset=96, workers=2)
    try:
        assert (source.num_train, source.num_test, source.image_shape) == (96, 64, (227, 227, 3))
        full = list(source.train_batches(16, seed=3, epoch=1))
        assert len(full) == 6 and full[0][0].shape == (16, 227, 227, 3)
        resumed = list(source.train_batches(16, seed=3, epoch=1, start_step=4))
        for (x, y), (x2, y2) in zip(full[4:], resumed, strict=True):
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)
        # Two shards of every global batch: the rows of the one-host batch, split.
        halves = [list(source.train_batches(16, seed=3, epoch=1, shard_index=i, num_shards=2))
                  for i in range(2)]  # fmt: skip
        for (x, y), h0, h1 in zip(full, *halves, strict=True):
            np.testing.assert_array_equal(np.concatenate([h0[0], h1[0]]), x)
            np.testing.assert_array_equal(np.concatenate([h0[1], h1[1]]), y)
        other = next(source.train_batches(16, seed=3, epoch=2))
        assert not np.array_equal(other[0], full[0][0])
        evals = list(source.eval_batches(48))
        assert [int(v.sum()) for _, _, v in evals] == [48, 16]
        assert all(x.shape == (48, 227, 227, 3) for x, _, _ in evals)
        assert not evals[1][0][16:].any()  # padding rows are zeros
        labels = np.concatenate([y[v] for _, y, v in evals])
        assert labels.min() >= 0 and labels.max() < 1000
    finally:
        source.close()


def test_unprepared_data_dir_says_how_to_prepare(tmp_path):
    with pytest.raises(imagenet_data.DatasetUnavailableError) as err:
        imagenet_data.ImageNetSource(data_dir=tmp_path)
    text = str(err.value)
    assert "ILSVRC2012_img_train.tar" in text and "downloads/manual" in text
    assert "python -m experiments.imagenet_data prepare" in text
    with pytest.raises(imagenet_data.DatasetUnavailableError, match=r"image-net\.org"):
        imagenet_data.prepare(tmp_path)


@pytest.fixture
def no_work(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the bad value was refused")

    monkeypatch.setattr(train, "run", forbidden)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "mnist"], "not ImageNet"),
        (["--model", "lenet5"], "invalid choice"),
        (["--pretrained", "nothere.npz"], "neither an .npz/.npy file nor a directory"),
        (["--batch-size", "512", "--train-subset", "100"], "fewer than one batch"),
        (["--sparsity", "conv9/kernel=0.5"], "conv9"),
    ],
)
def test_cli_refuses_bad_values_before_any_work(extra, message, imagenet_dir, tmp_path,
                                                no_work, capsys):  # fmt: skip
    argv = ["--config", WEIGHTS_CONFIG, "--workdir", str(tmp_path / "w"),
            "--data-dir", imagenet_dir, "--no-progress", *extra]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        imagenet.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m experiments.imagenet") and message in err


def test_cli_refuses_unprepared_data_and_misshaped_weights(tmp_path, imagenet_dir, no_work,
                                                           capsys):  # fmt: skip
    argv = ["--config", WEIGHTS_CONFIG, "--workdir", str(tmp_path / "w"), "--no-progress"]
    with pytest.raises(SystemExit):
        imagenet.main([*argv, "--data-dir", str(tmp_path)])
    assert "experiments.imagenet_data prepare" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", **{"conv1/kernel": np.zeros((3, 3))})
    with pytest.raises(SystemExit):
        imagenet.main(
            [*argv, "--data-dir", imagenet_dir, "--pretrained", str(tmp_path / "bad.npz")]
        )
    assert "missing keys" in capsys.readouterr().err


def test_shipped_alexnet_configs_pass_the_checks(imagenet_dir, tmp_path, monkeypatch):
    """Each ImageNet config's first line is its command, and it gets to the run (stubbed)."""
    started = []

    def fake_run(cfg, workdir):
        started.append(cfg)
        Path(workdir).mkdir()
        Path(workdir, "table.md").write_text("| table |\n")
        return {}

    monkeypatch.setattr(train, "run", fake_run)
    config = REPO / "experiments" / "configs" / "paper" / "alexnet.py"
    for name in ("weights", "computation"):
        command = f"python -m experiments.imagenet --config {config.relative_to(REPO)}:{name} "
        assert any(c.startswith(command) for c in configs.commands(str(config)))
        imagenet.main(["--config", f"{config}:{name}", "--workdir", str(tmp_path / name),
                       "--data-dir", imagenet_dir])  # fmt: skip
    assert [c.model for c in started] == ["alexnet", "alexnet"]
    assert started[0].dataset == "imagenet2012" and started[0].rho == 1.5e-3


@pytest.mark.slow
def test_alexnet_through_every_stage_on_synthetic_imagenet(tmp_path, imagenet_dir, capsys):
    """Data-parallel over 2 devices, a few steps of pretraining, ADMM and retraining with
    the paper's weight-focused ratios; exact budgets, top-5, MACs, the macs CLI."""
    workdir = tmp_path / "run"
    summary = imagenet.main([
        "--config", WEIGHTS_CONFIG, "--workdir", str(workdir), "--data-dir", imagenet_dir,
        "--devices", "2", "--batch-size", "8", "--eval-batch-size", "8", "--eval-subset", "8",
        "--train-subset", "64",
        "--pretrain-steps", "2", "--admm-iterations", "2", "--admm-steps", "1",
        "--retrain-steps", "2", "--no-progress",
    ])  # fmt: skip
    assert summary["total_params"] == 60_965_224
    kept = [28_227, 61_440, 168_100, 132_711, 88_474, 1_056_965, 989_856, 380_928]
    assert [r["nonzero"] for r in summary["layers"]] == kept
    assert summary["compression"] == pytest.approx(60_954_656 / sum(kept))
    assert len(summary["devices"]) == 2 and summary["dataset"] == "imagenet2012"
    for key in ("dense_accuracy", "hard_prune_accuracy", "pruned_accuracy", "dense_top5",
                "pruned_top5"):  # fmt: skip
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["pruned_top5"] >= summary["pruned_accuracy"]
    assert summary["macs"]["macs"] == 724_406_816
    assert summary["macs"]["pruned_macs"] == 198_393_349
    history = json.loads((workdir / "history.json").read_text())
    assert len(history["admm"]) == 2 and {s for s, *_ in history["loss"]} == {
        "pretrain", "admm", "retrain"
    }  # fmt: skip
    table = (workdir / "table.md").read_text()
    assert "| top-5 |" in table and "MACs after pruning" in table
    assert "Multiply-accumulates per image: **724,406,816**" in capsys.readouterr().out

    report = macs.main([str(workdir)])
    assert report["pruned_macs"] == 198_393_349 and report["kept"] == sum(kept)
