"""Image-text training pairs from webdataset shards: resolve, stream deterministically, decode, batch.

Accepted data sources (``TrainConfig.data``):

- a webdataset shard pattern, local or remote: ``shards/{000..099}.tar``, ``shards/*.tar``,
  ``https://host/cc12m-{00000..01242}.tar``, ``pipe:...``; samples hold an image
  (``jpg``/``jpeg``/``png``/``webp``) and a ``txt`` caption (several captions one a line: one is
  drawn per sample) or a ``cls`` label;
- a clip_benchmark dataset folder (``DIR/train/{0..N-1}.tar`` + ``nshards.txt``, ``classnames.txt``,
  ``zeroshot_classification_templates.txt``): its train split. Classification samples (``cls``)
  get captions made from the class names and the zero-shot templates.

The stream is a pure function of (sources, seed, samples already consumed): each epoch shuffles
the shard order and a sample buffer with RNGs seeded by (seed, epoch), so a resumed run skips
exactly the raw samples it had consumed and continues with the same batches. Under DDP every rank
reads the same global batch and decodes only its own slice, so N ranks see exactly the batch one
process would.
"""

from __future__ import annotations

import glob
import io
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quant.errors import TernbenchError

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
REMOTE_PREFIXES = ("http://", "https://", "pipe:", "s3://", "gs://", "hf://", "ais://")
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
DEFAULT_TEMPLATES = ("a photo of a {c}.",)


class DataError(TernbenchError, ValueError):
    """Training data that cannot be found or read: says what was looked for and how to provide it."""


@dataclass(frozen=True)
class ShardSource:
    """The shards of one data source and how its label-only samples become captions."""

    pattern: str
    urls: tuple[str, ...]
    classnames: tuple[str, ...] | None = None
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    meta_dir: str | None = field(default=None, compare=False)


def is_remote(pattern: str) -> bool:
    return pattern.startswith(REMOTE_PREFIXES)


def _expand(pattern: str) -> list[str]:
    import braceexpand

    return list(braceexpand.braceexpand(pattern))


def _read_lines(path: Path) -> tuple[str, ...]:
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _label_text(meta_dir: Path) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """Class names and templates from a clip_benchmark folder (or a shard folder's parent)."""
    for d in (meta_dir, meta_dir.parent):
        names = d / CLASSNAMES_FILE
        if names.is_file():
            templates = d / TEMPLATES_FILE
            return _read_lines(names), (_read_lines(templates) if templates.is_file() else DEFAULT_TEMPLATES)
    return None, DEFAULT_TEMPLATES


def _folder_source(folder: Path, split: str = "train") -> ShardSource:
    split_dir = folder / split
    nshards_file = split_dir / "nshards.txt"
    if nshards_file.is_file():
        n = int(nshards_file.read_text().strip())
        urls = [str(split_dir / f"{i}.tar") for i in range(n)]
        missing = [u for u in urls if not Path(u).is_file()]
        if missing:
            raise DataError(f"{nshards_file} announces {n} shards but {len(missing)} are missing, "
                            f"e.g. {missing[0]}")
    else:
        urls = sorted(glob.glob(str(split_dir / "*.tar"))) or sorted(glob.glob(str(folder / "*.tar")))
    if not urls:
        raise DataError(
            f"{folder} is a folder but holds no training shards: looked for {split_dir}/nshards.txt, "
            f"{split_dir}/*.tar and {folder}/*.tar (clip_benchmark's webdataset layout: "
            f"DIR/{split}/0.tar ... + nshards.txt)"
        )
    names, templates = _label_text(folder)
    return ShardSource(str(folder), tuple(urls), names, templates, str(folder))


def resolve_sources(patterns: tuple[str, ...] | list[str]) -> list[ShardSource]:
    """Every pattern -> its shards. A local pattern matching no file is an error (before training)."""
    sources = []
    for pattern in patterns:
        if is_remote(pattern):
            # Remote shards cannot be checked without fetching them; webdataset opens them lazily.
            sources.append(ShardSource(pattern, tuple(_expand(pattern))))
            continue
        path = Path(os.path.expanduser(pattern))
        if path.is_dir():
            sources.append(_folder_source(path))
            continue
        candidates = _expand(os.path.expanduser(pattern))
        urls: list[str] = []
        for c in candidates:
            urls.extend(sorted(glob.glob(c)) if glob.has_magic(c) else ([c] if Path(c).is_file() else []))
        if not urls:
            example = candidates[0] if candidates else pattern
            parent = Path(example).parent
            hint = f"{parent} does not exist" if not parent.exists() else (
                f"{parent} holds: {', '.join(sorted(p.name for p in parent.iterdir())[:8]) or 'nothing'}")
            raise DataError(
                f"data pattern {pattern!r} matches no shard ({len(candidates)} name(s) tried, e.g. {example}; "
                f"{hint}). Give shard files ('dir/{{0..9}}.tar', 'dir/*.tar'), a clip_benchmark dataset "
                "folder, or an http(s):// URL pattern"
            )
        missing = [c for c in candidates if not glob.has_magic(c) and not Path(c).is_file()]
        if missing:
            raise DataError(f"data pattern {pattern!r}: {len(missing)} of {len(candidates)} shards are missing, "
                            f"e.g. {missing[0]}")
        names, templates = _label_text(Path(urls[0]).parent)
        sources.append(ShardSource(pattern, tuple(urls), names, templates, str(Path(urls[0]).parent)))
    if not sources:
        raise DataError("no training data given")
    return sources


def _raw_samples(url: str) -> Iterator[dict[str, Any]]:
    """Raw (undecoded) samples of one shard, through webdataset's tar reader (local or remote)."""
    import webdataset as wds

    try:
        yield from wds.tarfile_to_samples()(iter([{"url": url}]))
    except Exception as e:  # unreachable URL, truncated or corrupt tar: name the shard, not a deep traceback
        raise DataError(f"cannot read training shard {url}: {type(e).__name__}: {e}") from e


def caching_reader(limit_bytes: int = 256 << 20) -> Callable[[str], Iterator[dict[str, Any]]]:
    """A shard reader that keeps local shards' raw samples in memory (up to ``limit_bytes``) after
    their first full read, so later epochs skip the tar parsing. Yields copies: ``raw_stream``
    writes into the samples it gets."""
    cache: dict[str, list[dict[str, Any]]] = {}
    used = 0

    def read(url: str) -> Iterator[dict[str, Any]]:
        nonlocal used
        if url in cache:
            for sample in cache[url]:
                yield dict(sample)
            return
        keep, size, samples = not is_remote(url), 0, []
        for sample in _raw_samples(url):
            if keep:
                samples.append(dict(sample))
                size += sum(len(v) for v in sample.values() if isinstance(v, (bytes, bytearray)))
                keep = used + size <= limit_bytes
            yield sample
        if keep:
            cache[url] = samples
            used += size

    return read


def raw_stream(sources: list[ShardSource], seed: int, shuffle_buffer: int, start: int = 0,
               reader: Callable[[str], Iterator[dict[str, Any]]] = _raw_samples) -> Iterator[dict[str, Any]]:
    """Endless, deterministic stream of raw samples; ``start`` skips that many (resume).

    Each sample gets ``__source__`` (index into ``sources``) and ``__u__`` (a uniform draw that
    picks its caption), both fixed by (seed, epoch, position) so decoding is reproducible.
    """
    shards = [(i, u) for i, s in enumerate(sources) for u in s.urls]
    epoch, produced = 0, 0
    while True:
        rng = random.Random(f"{seed}-{epoch}")
        order = list(shards)
        rng.shuffle(order)
        buffer: list[dict[str, Any]] = []
        n_epoch = 0
        for src_index, url in order:
            for sample in reader(url):
                sample["__source__"] = src_index
                sample["__u__"] = rng.random()
                buffer.append(sample)
                n_epoch += 1
                if len(buffer) >= max(shuffle_buffer, 1):
                    out = _pop_random(buffer, rng)
                    produced += 1
                    if produced > start:
                        yield out
        while buffer:
            out = _pop_random(buffer, rng)
            produced += 1
            if produced > start:
                yield out
        if n_epoch == 0:
            raise DataError(f"the shards of {', '.join(s.pattern for s in sources)} hold no samples")
        epoch += 1


def _pop_random(buffer: list[dict[str, Any]], rng: random.Random) -> dict[str, Any]:
    j = rng.randrange(len(buffer))
    buffer[j], buffer[-1] = buffer[-1], buffer[j]
    return buffer.pop()


def caption_of(sample: dict[str, Any], source: ShardSource) -> str:
    """The sample's caption: one line of ``txt`` (drawn by ``__u__``), or a templated class name."""
    u = sample["__u__"]
    if "txt" in sample:
        lines = [line.strip() for line in _text(sample["txt"]).splitlines() if line.strip()]
        if lines:
            return lines[int(u * len(lines)) % len(lines)]
    if "cls" in sample:
        label = int(_text(sample["cls"]).strip())
        if source.classnames is None:
            raise DataError(
                f"sample {sample.get('__key__')} of {sample.get('__url__')} has a class label but no caption, "
                f"and no {CLASSNAMES_FILE} was found in {source.meta_dir} or its parent to make one"
            )
        if not 0 <= label < len(source.classnames):
            raise DataError(f"sample {sample.get('__key__')} of {sample.get('__url__')} has label {label}, "
                            f"outside the {len(source.classnames)} classes of {source.meta_dir}/{CLASSNAMES_FILE}")
        n = len(source.templates)
        # Template choice and caption choice come from the same draw; spread it over templates.
        template = source.templates[int(u * n) % n]
        return template.replace("{c}", source.classnames[label])
    raise DataError(f"sample {sample.get('__key__')} of {sample.get('__url__')} has neither txt nor cls "
                    f"(keys: {sorted(k for k in sample if not k.startswith('__'))})")


def group_of(sample: dict[str, Any]) -> str:
    """Pairs of one group are all positives of each other: a class of one source, else the sample."""
    if "txt" not in sample and "cls" in sample:
        return f"{sample['__source__']}:cls:{_text(sample['cls']).strip()}"
    return f"{sample.get('__url__')}:{sample.get('__key__')}"


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)


def image_of(sample: dict[str, Any]):
    from PIL import Image

    for k in IMAGE_KEYS:
        if k in sample:
            try:
                return Image.open(io.BytesIO(sample[k])).convert("RGB")
            except Exception as e:
                raise DataError(f"sample {sample.get('__key__')} of {sample.get('__url__')}: its {k} image "
                                f"cannot be decoded ({e})") from e
    raise DataError(f"sample {sample.get('__key__')} of {sample.get('__url__')} has no image "
                    f"(looked for {', '.join(IMAGE_KEYS)}; keys: {sorted(k for k in sample if not k.startswith('__'))})")


class PairBatches:
    """Global batches for one rank, from a deterministic raw stream.

    Each batch is ``(images, captions, groups)``: this rank's slice of images and captions, and
    a group id per pair of the *global* batch (every rank can compute them without decoding).
    ``position`` is the number of raw samples consumed so far (saved in checkpoints).
    """

    def __init__(self, sources: list[ShardSource], transform, global_batch: int, seed: int,
                 shuffle_buffer: int = 2048, rank: int = 0, world_size: int = 1, position: int = 0,
                 cache: bool = True):
        if global_batch % world_size:
            raise DataError(f"batch size {global_batch} does not split evenly over {world_size} processes; "
                            f"use a multiple of {world_size}")
        self.sources, self.transform = sources, transform
        self.global_batch, self.rank, self.world_size = global_batch, rank, world_size
        self.position = position
        # Small local data (the mini suite) is read for many epochs: its raw samples and decoded
        # images are kept in memory (bounded), which took about a third off a teacher step on 2
        # CPU cores. The transform is open_clip's deterministic evaluation preprocessing, so a
        # cached image is the one decoding would give.
        reader = caching_reader() if cache else _raw_samples
        self._stream = raw_stream(sources, seed, shuffle_buffer, start=position, reader=reader)
        self._images: dict[tuple[str, str], Any] = {}
        self._image_bytes, self._image_limit = 0, (512 << 20) if cache else 0

    def __iter__(self):
        return self

    def __next__(self):
        import torch

        raw = [next(self._stream) for _ in range(self.global_batch)]
        self.position += self.global_batch
        per = self.global_batch // self.world_size
        mine = raw[self.rank * per:(self.rank + 1) * per]
        images = torch.stack([self._image(s) for s in mine])
        texts = [caption_of(s, self.sources[s["__source__"]]) for s in mine]
        ids: dict[str, int] = {}
        groups = torch.tensor([ids.setdefault(group_of(s), len(ids)) for s in raw])
        return images, texts, groups

    def _image(self, sample: dict[str, Any]):
        key = (str(sample.get("__url__")), str(sample.get("__key__")))
        image = self._images.get(key)
        if image is None:
            image = self.transform(image_of(sample))
            if self._image_bytes + image.nbytes <= self._image_limit and not is_remote(key[0]):
                self._images[key] = image
                self._image_bytes += image.nbytes
        return image
