"""ImageNet ILSVRC-2012 through tensorflow-datasets, without TensorFlow.

Where the data comes from
    TFDS's ``imagenet2012`` (version 5.1.0) in array_record format, read with
    ``tfds.data_source`` (random access, no TensorFlow). The archives cannot be
    downloaded automatically: register at https://image-net.org/download-images and
    put ``ILSVRC2012_img_train.tar`` (138 GB) and ``ILSVRC2012_img_val.tar`` (6.3 GB) in
    TFDS's manual dir, ``$TFDS_DATA_DIR/downloads/manual/`` (default
    ``~/tensorflow_datasets/downloads/manual/``). Then prepare the array_record files
    either with TFDS on a machine that has TensorFlow (TFDS's ``imagenet2012`` builder
    needs it to *prepare*)::

        tfds build imagenet2012 --data_dir=$TFDS_DATA_DIR --file_format=array_record

    or TF-free with :func:`prepare` (hours, bounded by reading the tars; its CLI)::

        python -m experiments.imagenet_data prepare --data-dir $TFDS_DATA_DIR

    Both write ``$TFDS_DATA_DIR/imagenet2012/5.1.0/`` with TFDS's features (``image``:
    JPEG bytes, ``label``: ClassLabel over the 1000 synsets in TFDS's order,
    ``file_name``), readable by either. :func:`prepare` keeps the archive order (TFDS
    shuffles records when writing; batches are shuffled at read time anyway), gives the
    validation images their labels from TFDS's ``validation_labels.txt`` by image
    number, and re-encodes the few CMYK / PNG files as RGB JPEG as TFDS does.

Preprocessing (`preprocess`), done on the host with Pillow
    * train: resize the shorter side to 256 (aspect kept), a random 227x227 crop and a
      random horizontal flip, as BVLC's AlexNet (which squashed images to 256x256 and
      cropped 227; the aspect-preserving resize is the now-usual variant);
    * eval: resize the shorter side to 256, the central 227x227 crop.

    JPEGs are decoded with Pillow's draft mode (DCT-domain downscaling to the smallest
    size still >= the target) and resized bilinearly; images stay uint8 until the
    device (``experiments.data.mnist.to_float``). The mean subtraction lives in the model
    (:class:`experiments.models.alexnet.AlexNet`), like the weights it belongs to.

Batches (`ImageNetSource`)
    The order of epoch ``e`` is ``experiments.data.epoch_permutation(n, seed, e)`` and
    the crop and flip of an image depend only on ``(seed, epoch, record index)``, so
    a batch is a pure function of ``(seed, epoch, step)`` and a resumed run sees the
    same data. Records are read by one background thread and decoded by a pool of
    threads (Pillow releases the GIL), ``prefetch`` batches ahead of the consumer.
    Several hosts: each reads only its rows of every global batch.

:func:`write_synthetic_archives` writes small archives in the real layout (tar of
per-synset tars, validation tar) with random JPEGs, to test the whole path here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.data import mnist as data_lib
from experiments.data.sharding import check_shard

__all__ = [
    "CROP",
    "NAME",
    "RESIZE",
    "DatasetUnavailableError",
    "ImageNetSource",
    "is_imagenet",
    "manual_dir",
    "prepare",
    "preprocess",
    "write_synthetic_archives",
]

NAME = "imagenet2012"
CROP = 227  # BVLC AlexNet's input
RESIZE = 256  # shorter side before cropping
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG$")

DatasetUnavailableError = data_lib.DatasetUnavailableError


def is_imagenet(dataset: str) -> bool:
    """Whether a ``Config.dataset`` name selects this module (``imagenet2012[:VERSION]``)."""
    return dataset.split(":")[0] == NAME


def manual_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """TFDS's manual dir for a data dir: ``DATA_DIR/downloads/manual``."""
    return data_lib.tfds_data_dir(data_dir) / "downloads" / "manual"


# --------------------------------------------------------------------------- images


def _resized(data: bytes, resize: int) -> Any:
    """The image in ``data`` as RGB with its shorter side scaled to ``resize``."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    w, h = img.size
    scale = resize / min(w, h)
    size = (max(resize, round(w * scale)), max(resize, round(h * scale)))
    if img.format == "JPEG":
        img.draft("RGB", size)  # decode at 1/2..1/8 scale while still >= size
    img = img.convert("RGB")
    if img.size != size:
        img = img.resize(size, Image.BILINEAR)
    return img


def preprocess(
    data: bytes,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    crop: int = CROP,
    resize: int = RESIZE,
) -> np.ndarray:
    """uint8 (crop, crop, 3) RGB from encoded image bytes (see the module docstring).

    ``train=True`` needs ``rng`` for the crop position and the flip.
    """
    if crop > resize:
        raise ValueError(f"crop {crop} is larger than the resized shorter side {resize}")
    img = _resized(data, resize)
    w, h = img.size
    if train:
        if rng is None:
            raise ValueError("preprocess(train=True) needs rng= for the random crop and flip")
        top = int(rng.integers(0, h - crop + 1))
        left = int(rng.integers(0, w - crop + 1))
        flip = bool(rng.random() < 0.5)
    else:
        top, left, flip = (h - crop) // 2, (w - crop) // 2, False
    out = np.asarray(img.crop((left, top, left + crop, top + crop)), np.uint8)
    return np.ascontiguousarray(out[:, ::-1]) if flip else out


# --------------------------------------------------------------------------- source


class ImageNetSource:
    """Train / eval batches of ``imagenet2012`` for :class:`experiments.train.Pipeline`.

    ``name`` is ``imagenet2012`` or ``imagenet2012:VERSION``; ``data_dir`` the TFDS data
    dir (default ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``). ``train_subset``
    keeps the first N training records, ``eval_subset`` the first N evaluation records.
    Batches are uint8 (B, crop, crop, 3) images and int32 labels; see the module
    docstring for the preprocessing and determinism.
    """

    top5 = True  # the pipeline reports top-5 accuracy next to top-1

    def __init__(
        self,
        name: str = NAME,
        data_dir: str | os.PathLike | None = None,
        *,
        train_split: str = "train",
        eval_split: str = "validation",
        train_subset: int = 0,
        eval_subset: int = 0,
        crop: int = CROP,
        resize: int = RESIZE,
        workers: int | None = None,
        prefetch: int = 2,
    ):
        if not is_imagenet(name):
            raise ValueError(f"ImageNetSource reads {NAME}[:VERSION], got {name!r}")
        if train_subset < 0 or eval_subset < 0 or prefetch < 1 or crop > resize:
            raise ValueError(
                f"need train_subset >= 0, eval_subset >= 0, prefetch >= 1 and crop <= resize; "
                f"got {train_subset}, {eval_subset}, {prefetch}, {crop} > {resize}"
            )
        self.name = name
        self.data_dir = data_lib.tfds_data_dir(data_dir)
        self._train = _open_split(name, train_split, self.data_dir)
        self._eval = _open_split(name, eval_split, self.data_dir)
        label = self._train.dataset_info.features["label"]
        self.num_classes = int(label.num_classes)
        self.num_train = len(self._train)
        if train_subset:
            self.num_train = min(self.num_train, train_subset)
        self.num_test = len(self._eval)
        if eval_subset:
            self.num_test = min(self.num_test, eval_subset)
        self.crop, self.resize = crop, resize
        self.image_shape = (crop, crop, 3)
        self.prefetch = prefetch
        self._images = concurrent.futures.ThreadPoolExecutor(
            workers or os.cpu_count() or 1, thread_name_prefix="imagenet-decode"
        )
        # One reader thread: batches are read in order, and the data source is not
        # shared between threads.
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="imagenet-read")

    # ---- the Pipeline's interface (same as experiments.data.ArraySource)

    def train_batches(
        self,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        start_step: int = 0,
        shard_index: int = 0,
        num_shards: int = 1,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The (x, y) batches of one epoch from ``start_step`` on (this shard's rows)."""
        per_shard = check_shard(batch_size, shard_index, num_shards)
        steps = data_lib.steps_per_epoch(self.num_train, batch_size)
        if not 0 <= start_step <= steps:
            raise ValueError(f"start_step {start_step} outside [0, {steps}]")
        order = data_lib.epoch_permutation(self.num_train, seed=seed, epoch=epoch)

        def rows(step: int) -> np.ndarray:
            lo = step * batch_size + shard_index * per_shard
            return order[lo : lo + per_shard]

        jobs = (
            (rows(step), [(seed, epoch, int(i)) for i in rows(step)])
            for step in range(start_step, steps)
        )
        for x, y, _ in self._pipelined(self._train, jobs, train=True):
            yield x, y

    def eval_batches(
        self, batch_size: int, *, shard_index: int = 0, num_shards: int = 1
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(x, y, valid) over the whole eval split in order; the last batch padded."""
        per_shard = check_shard(batch_size, shard_index, num_shards)
        n = self.num_test

        def job(start: int) -> tuple[np.ndarray, None]:
            lo = start + shard_index * per_shard
            return np.arange(lo, min(lo + per_shard, n)), None

        jobs = (job(start) for start in range(0, n, batch_size))
        for x, y, count in self._pipelined(self._eval, jobs, train=False, pad_to=per_shard):
            valid = np.zeros((per_shard,), bool)
            valid[:count] = True
            yield x, y, valid

    # ---- loading

    def _pipelined(
        self,
        source: Any,
        jobs: Iterable[tuple[np.ndarray, Sequence[tuple[int, int, int]] | None]],
        *,
        train: bool,
        pad_to: int | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """Runs batch jobs ``prefetch`` ahead in the background, yields them in order."""
        pending: collections.deque = collections.deque()
        jobs = iter(jobs)
        try:
            for indices, seeds in jobs:
                pending.append(
                    self._reader.submit(self._load, source, indices, seeds, train, pad_to)
                )
                if len(pending) > self.prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # the consumer stopped early: drop what is queued
            for fut in pending:
                fut.cancel()

    def _load(
        self,
        source: Any,
        indices: np.ndarray,
        seeds: Sequence[tuple[int, int, int]] | None,
        train: bool,
        pad_to: int | None,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        count = len(indices)
        records = _read(source, [int(i) for i in indices])
        rows = max(count, pad_to or 0)
        x = np.zeros((rows, self.crop, self.crop, 3), np.uint8)
        y = np.zeros((rows,), np.int32)

        def one(j: int) -> None:
            rng = np.random.default_rng(list(seeds[j])) if train else None
            x[j] = preprocess(
                records[j]["image"], train=train, rng=rng, crop=self.crop, resize=self.resize
            )
            y[j] = records[j]["label"]

        for fut in [self._images.submit(one, j) for j in range(count)]:
            fut.result()
        return x, y, count

    def close(self) -> None:
        self._images.shutdown(wait=False, cancel_futures=True)
        self._reader.shutdown(wait=False, cancel_futures=True)


def _open_split(name: str, split: str, data_dir: Path) -> Any:
    """``tfds.data_source`` of one split with the images left as encoded bytes."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(
            name,
            split=split,
            data_dir=os.fspath(data_dir),
            download=False,  # TFDS's own prepare needs TensorFlow
            decoders={"image": tfds.decode.SkipDecoding()},
        )
    except Exception as err:
        raise DatasetUnavailableError(
            f"{name} split {split!r} is not prepared in {data_dir / NAME} ({type(err).__name__}: "
            f"{err}). Put {TRAIN_TAR} and {VAL_TAR} in {manual_dir(data_dir)} and run "
            f"'python -m experiments.imagenet_data prepare --data-dir {data_dir}' (TF-free), or "
            "'tfds build imagenet2012 --file_format=array_record' where TensorFlow is installed; "
            "or point TFDS_DATA_DIR / --data-dir at a data dir holding imagenet2012/5.1.0/"
        ) from err


def _read(source: Any, keys: list[int]) -> list[dict[str, Any]]:
    try:
        return list(source.__getitems__(keys))  # batched reads are faster
    except (TypeError, AttributeError):
        return [source[k] for k in keys]


# --------------------------------------------------------------------------- prepare


def _jpeg_rgb(data: bytes) -> bytes:
    """``data`` unchanged when it is an RGB JPEG, else re-encoded as one (TFDS does the
    same for ImageNet's 22 CMYK JPEGs and its one PNG)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG" and img.mode == "RGB":
            return data
        out = io.BytesIO()
        img.convert("RGB").save(out, "JPEG", quality=100)
        return out.getvalue()


def _train_examples(path: Path) -> Iterator[dict[str, Any]]:
    """(file_name, JPEG bytes, synset) of the train tar: a tar of ``<synset>.tar`` tars."""
    with tarfile.open(path, mode="r|") as outer:
        for member in outer:
            if not member.isfile() or not member.name.endswith(".tar"):
                continue
            synset = os.path.basename(member.name)[:-4]
            inner_bytes = outer.extractfile(member).read()  # one class: ~150 MB at most
            with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:") as inner:
                for image in inner:
                    if image.isfile():
                        name = os.path.basename(image.name)
                        data = inner.extractfile(image).read()
                        yield {"file_name": name, "image": _jpeg_rgb(data), "label": synset}


def _val_examples(path: Path, labels: Sequence[str]) -> Iterator[dict[str, Any]]:
    with tarfile.open(path, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = os.path.basename(member.name)
            match = _VAL_NAME.match(name)
            if not match or not 1 <= int(match.group(1)) <= len(labels):
                raise ValueError(f"{path}: unexpected validation file {member.name!r}")
            data = tar.extractfile(member).read()
            label = labels[int(match.group(1)) - 1]
            yield {"file_name": name, "image": _jpeg_rgb(data), "label": label}


def _validation_labels() -> list[str]:
    import tensorflow_datasets as tfds

    path = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")
    return path.read_text().strip().splitlines()


def prepare(
    data_dir: str | os.PathLike | None = None,
    *,
    manual: str | os.PathLike | None = None,
    shard_examples: int = 1250,
    log: Any = print,
) -> Path:
    """Writes ``imagenet2012/5.1.0`` (array_record) from the archives, without TensorFlow.

    Reads ``ILSVRC2012_img_train.tar`` and ``ILSVRC2012_img_val.tar`` from ``manual``
    (default: TFDS's manual dir, ``DATA_DIR/downloads/manual``); at least one must be
    there. Records are encoded with TFDS's features of ``imagenet2012`` and written in
    shards of ``shard_examples``, then ``dataset_info.json`` and ``features.json``;
    shards are written under temporary names and renamed when the split is complete.
    Returns the dataset directory.
    """
    import tensorflow_datasets as tfds
    from array_record.python import array_record_module
    from tensorflow_datasets.core import example_serializer

    data_dir = data_lib.tfds_data_dir(data_dir)
    manual = Path(manual) if manual is not None else manual_dir(data_dir)
    archives = {"train": manual / TRAIN_TAR, "validation": manual / VAL_TAR}
    present = {split: p for split, p in archives.items() if p.is_file()}
    if not present:
        raise DatasetUnavailableError(
            f"neither {TRAIN_TAR} nor {VAL_TAR} is in {manual}: download them from "
            "https://image-net.org/download-images (registration needed) and put them there"
        )
    builder = tfds.builder(NAME, data_dir=os.fspath(data_dir), file_format="array_record")
    out_dir = Path(builder.data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = builder.info.features
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    split_infos = []
    for split, archive in present.items():
        if split == "train":
            examples = _train_examples(archive)
        else:
            examples = _val_examples(archive, _validation_labels())
        tmp_paths: list[Path] = []
        lengths: list[int] = []
        num_bytes = 0
        writer = None
        for example in examples:
            if writer is None or lengths[-1] == shard_examples:
                if writer is not None:
                    writer.close()
                tmp_paths.append(out_dir / f".{NAME}-{split}.tmp-{len(tmp_paths):05d}")
                writer = array_record_module.ArrayRecordWriter(
                    os.fspath(tmp_paths[-1]), "group_size:1"
                )
                lengths.append(0)
            record = serializer.serialize_example(features.encode_example(example))
            writer.write(record)
            lengths[-1] += 1
            num_bytes += len(record)
            if sum(lengths) % 10_000 == 0:
                log(f"{split}: {sum(lengths):,} images")
        if writer is not None:
            writer.close()
        template = tfds.core.ShardedFileTemplate(
            data_dir=out_dir,
            template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
            dataset_name=NAME,
            split=split,
            filetype_suffix="array_record",
        )
        for tmp, final in zip(tmp_paths, template.sharded_filepaths(len(tmp_paths)), strict=True):
            os.replace(tmp, os.fspath(final))
        split_infos.append(
            tfds.core.SplitInfo(
                name=split, shard_lengths=lengths, num_bytes=num_bytes, filename_template=template
            )
        )
        log(f"{split}: {sum(lengths):,} images in {len(lengths)} shards")
    builder.info.set_splits(tfds.core.SplitDict(split_infos))
    builder.info.write_to_directory(out_dir)
    return out_dir


# --------------------------------------------------------------------------- synthetic


def _random_jpeg(rng: np.random.Generator, size: tuple[int, int], label: int) -> bytes:
    from PIL import Image

    w, h = size
    # A class-dependent mean colour plus noise: learnable, and JPEG-compressible.
    base = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], np.int16)
    pixels = base + rng.integers(-40, 41, (h, w, 3), dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=85)
    return out.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_synthetic_archives(
    directory: str | os.PathLike,
    *,
    num_train: int = 320,
    num_val: int = 64,
    num_classes: int = 10,
    sizes: Sequence[tuple[int, int]] = ((224, 224), (300, 240), (240, 320)),
    seed: int = 0,
) -> dict[str, Path]:
    """Writes ImageNet-layout archives of random JPEGs into ``directory``.

    ``ILSVRC2012_img_train.tar`` holds one ``<synset>.tar`` per class (the first
    ``num_classes`` synsets of TFDS's label list) and ``ILSVRC2012_img_val.tar`` the
    images ``ILSVRC2012_val_00000001.JPEG`` ... whose labels TFDS's label file gives.
    Image sizes cycle through ``sizes`` (width, height). For tests and smoke runs.
    """
    import tensorflow_datasets as tfds

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = tfds.builder(NAME).info.features["label"].names
    val_labels = _validation_labels()
    rng = np.random.default_rng(seed)
    train_path, val_path = directory / TRAIN_TAR, directory / VAL_TAR
    with tarfile.open(train_path, "w") as outer:
        for c in range(num_classes):
            inner_buf = io.BytesIO()
            with tarfile.open(fileobj=inner_buf, mode="w") as inner:
                for i in range(c, num_train, num_classes):
                    jpeg = _random_jpeg(rng, sizes[i % len(sizes)], c)
                    _add_bytes(inner, f"{names[c]}_{i}.JPEG", jpeg)
            _add_bytes(outer, f"{names[c]}.tar", inner_buf.getvalue())
    with tarfile.open(val_path, "w") as tar:
        for i in range(num_val):
            label = names.index(val_labels[i])
            jpeg = _random_jpeg(rng, sizes[i % len(sizes)], label)
            _add_bytes(tar, f"ILSVRC2012_val_{i + 1:08d}.JPEG", jpeg)
    return {"train": train_path, "validation": val_path}
