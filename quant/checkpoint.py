"""Packed ternary checkpoints: one safetensors file, no pickle, no network.

Layout: per ternary tensor ``NAME.qdata`` (uint8 packed trits) and ``NAME.scale``; every
other tensor in fp16 (or fp32 on request); metadata (safetensors' string map) holds the
format version, the packing, the open_clip model config, the quant config, the source
spec, per-tensor shapes, a content hash over the tensors and (format 2) a digest of every
metadata field, so a hand-edited architecture, preprocessing or quant config is refused on load.
The format is recognized by content (``is_packed_file``), never by the file name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import struct
from pathlib import Path
from typing import Any

from quant.errors import CheckpointError

FORMAT_NAME = "ternbench-packed"
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)  # 1: no metadata digest (files written before it existed still load)
DIGEST_KEY = "metadata_sha256"
# Metadata fields decoded from JSON, and the string fields every version has.
JSON_FIELDS = ("model_cfg", "preprocess_cfg", "random_weights", "quant_config", "ternary", "tensor_sha256")
TEXT_FIELDS = ("packing", "float_dtype", "arch", "tokenizer", "source_spec", "content_sha256")
ENTRY_KEYS = ("shape", "n", "out_axis", "kind", "tower")


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The safetensors JSON header of ``path`` (tensor entries and ``__metadata__``), validated."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated file ({size} bytes): not a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CheckpointError(f"{path}: truncated file, or not a safetensors file "
                                      f"(header says {n} bytes, file has {size - 8})")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a packed checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupted safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header (not a JSON object)")
    return header


def _looks_like_safetensors(path: Path) -> bool:
    """The first bytes of a safetensors file: a little-endian header length that fits the file,
    then a JSON object. A pickle or zip (``.pt``/``.bin`` state dicts) fails this at once."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def is_packed_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a safetensors file written by ``save_packed`` (any format version),
    whatever its name: the content decides, so a packed file renamed to ``.bin`` is still one.

    A ``.safetensors`` file that is not readable (truncated, corrupted) raises ``CheckpointError``
    rather than answering False: the user needs to hear why. A file of another name that is not
    safetensors at all (a pickled state dict) is simply not a packed checkpoint.
    """
    path = Path(path)
    if path.suffix != ".safetensors" and not _looks_like_safetensors(path):
        return False
    meta = read_header(path).get("__metadata__") or {}
    return meta.get("format") == FORMAT_NAME

# ----------------------------------------------------------------------------- helpers

FLOAT_DTYPES = {"fp16": "float16", "fp32": "float32"}


def _torch_dtype(name: str):
    import torch

    if name not in FLOAT_DTYPES:
        raise CheckpointError(f"unknown float dtype {name!r}; valid: {', '.join(FLOAT_DTYPES)}")
    return getattr(torch, FLOAT_DTYPES[name])


def _tensor_sha256(t) -> str:
    import torch

    b = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(b).hexdigest()


def _metadata_digest(metadata: dict[str, str]) -> dict[str, str]:
    """sha256 of each metadata field's text: stored, then re-computed on load, so an edited field
    (even one of the same length) is named instead of loading a different model."""
    return {k: hashlib.sha256(v.encode()).hexdigest() for k, v in sorted(metadata.items()) if k != DIGEST_KEY}


def _content_hash(per_tensor: dict[str, str]) -> str:
    h = hashlib.sha256()
    for k in sorted(per_tensor):
        h.update(f"{k}={per_tensor[k]}\n".encode())
    return h.hexdigest()


def _packable_state(model):
    """The ``QuantState`` of a model that can be packed; errors say what to do."""
    from quant.state import quant_state

    state = quant_state(model)
    if state is None:
        raise CheckpointError("the model is not quantized: run quant.quantize_(model, quant.preset('q-all')) "
                              "first (a packed checkpoint holds ternary weights)")
    if state.stage != "converted":
        raise CheckpointError(f"the model is {state.stage!r}, not converted: call quant.convert(model) "
                              "to freeze its ternary weights before saving")
    if not state.ternary:
        raise CheckpointError(f"packed checkpoints hold ternary weights; this model has {state.config.TYPE!r} "
                              "weights (quantize with a TernaryConfig)")
    return state


def _model_tensors(model, state):
    """``(float tensors by name, {ternary name: (trits, scale)})``: an accelerated model's kernels give
    their trits and scales; every other ternary weight's are the codes the model carries
    (``quant.codes``), checked against the weight."""
    from quant.codes import ternary_codes_of
    from quant.primitives import scale_shape, to_out_first

    if state.accelerated is not None:
        from quant.kernels.swap import unaccelerated_state

        floats, held = unaccelerated_state(model)
    else:
        floats, held = model.state_dict(), {}
    cfg = state.config
    codes = {}
    for name, meta in state.params.items():
        if name in held:
            trits, row_scale = held[name]
            shape = scale_shape(tuple(to_out_first(trits, meta.out_axis).shape), cfg.granularity, cfg.group_size)
            # kernels keep one scale a row; a per-tensor scale is the same number on every row
            codes[name] = (trits.cpu(), row_scale.float().reshape(-1)[: math.prod(shape)].reshape(shape).cpu())
        else:
            codes[name] = ternary_codes_of(model, name)
    floats = {k: v for k, v in floats.items() if k not in state.params}
    return floats, codes


# ----------------------------------------------------------------------------- save


def save_packed(model, path: str | os.PathLike, packing: str = "base3", *, float_dtype: str = "fp32",
                force: bool = False, arch: str | None = None, spec: str | None = None) -> Path:
    """Write a quantized model as one packed safetensors file (atomically). Returns the path.

    ``float_dtype``: dtype of every non-ternary tensor and of the scales. ``fp32`` (default)
    makes the loaded model's outputs bit-identical to the saved model's (it costs ~2% of the file for ViT-B-32); ``fp16`` is the smallest file. ``arch``: the open_clip
    architecture, needed only for a model not built by ``bench.models.build_model``.
    """
    from safetensors.torch import save_file

    from quant.fileio import atomic_path, check_output_path
    from quant.origin import origin_of
    from quant.packing import get_format, pack

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: a packed checkpoint must end in .safetensors (e.g. {path.with_suffix('.safetensors')})")
    check_output_path(path, "packed checkpoint")
    if path.exists() and not force:
        raise CheckpointError(f"{path} already exists; choose another path or overwrite it with force=True (--force)")
    fmt = get_format(packing)
    dtype = _torch_dtype(float_dtype)
    qstate = _packable_state(model)
    origin = origin_of(model, arch)

    state, codes = _model_tensors(model, qstate)
    tensors: dict[str, Any] = {}
    entries: dict[str, Any] = {}
    for name, meta in qstate.params.items():
        trits, scale = codes[name]
        tensors[f"{name}.qdata"] = pack(trits, packing, name=name)
        tensors[f"{name}.scale"] = scale.to(dtype).contiguous()
        entries[name] = {"shape": list(trits.shape), "n": trits.numel(), **meta.to_dict()}
    for name, t in state.items():
        if name in tensors:
            raise CheckpointError(f"tensor name {name!r} collides with a packed tensor name")
        t = t.detach().cpu()
        tensors[name] = (t.to(dtype) if t.is_floating_point() else t).contiguous()
    hashes = {k: _tensor_sha256(v) for k, v in tensors.items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "packing": fmt.name,
        "float_dtype": float_dtype,
        "arch": origin.arch,
        "model_cfg": json.dumps(origin.model_cfg, sort_keys=True),
        "preprocess_cfg": json.dumps(origin.preprocess_cfg, sort_keys=True),
        "tokenizer": origin.tokenizer,
        "source_spec": spec or origin.spec,
        "random_weights": json.dumps(bool(origin.random_weights)),
        "quant_config": json.dumps(qstate.config.to_dict(), sort_keys=True),
        "ternary": json.dumps(entries, sort_keys=True),
        "tensor_sha256": json.dumps(hashes, sort_keys=True),
        "content_sha256": _content_hash(hashes),
    }
    metadata[DIGEST_KEY] = json.dumps(_metadata_digest(metadata), sort_keys=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


# ----------------------------------------------------------------------------- load


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of a packed file (JSON fields parsed); validates format and version."""
    path = Path(path)
    header = read_header(path)
    raw = header.get("__metadata__") or {}
    if raw.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a ternbench packed checkpoint (no format={FORMAT_NAME!r} in its "
                              "metadata); write one with `ternbench quantize ... --out FILE.safetensors`")
    version = raw.get("format_version")
    if not (version or "").isdigit() or int(version) not in SUPPORTED_VERSIONS:
        raise CheckpointError(f"{path}: unknown format version {version!r}; this ternbench reads "
                              f"{', '.join(map(str, SUPPORTED_VERSIONS))} (a newer ternbench wrote it?)")
    if int(version) >= 2:
        _verify_digest(path, raw)
    meta: dict[str, Any] = dict(raw)
    for key in (*JSON_FIELDS, *TEXT_FIELDS):
        if not isinstance(raw.get(key), str):
            raise CheckpointError(f"{path}: metadata field {key!r} is missing (corrupted file)")
    for key in JSON_FIELDS:
        try:
            meta[key] = json.loads(raw[key])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: metadata field {key!r} is not valid JSON ({e})") from None
    meta["format_version"] = int(version)
    _validate_metadata(path, meta, header)
    try:
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError):
        raise CheckpointError(f"{path}: corrupted safetensors header (a tensor entry has no data_offsets)") from None
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    expected, actual = 8 + n + end, path.stat().st_size
    if actual < expected:
        raise CheckpointError(f"{path}: truncated file: {actual} bytes, the header describes {expected}")
    meta["file_bytes"] = actual
    return meta


def _verify_digest(path: Path, raw: dict[str, str]) -> None:
    """Every metadata field must match the digest written with it; the error names the field."""
    try:
        stored = json.loads(raw[DIGEST_KEY])
    except KeyError:
        raise CheckpointError(f"{path}: metadata field {DIGEST_KEY!r} is missing (corrupted file)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: metadata field {DIGEST_KEY!r} is not valid JSON ({e})") from None
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: metadata field {DIGEST_KEY!r} is not a JSON object (corrupted file)")
    actual = _metadata_digest(raw)
    for key in sorted(set(stored) | set(actual)):
        if key not in actual:
            raise CheckpointError(f"{path}: metadata field {key!r} is missing (corrupted file)")
        if key not in stored:
            raise CheckpointError(f"{path}: metadata field {key!r} is not covered by the metadata digest "
                                  "(added after the file was written)")
        if stored[key] != actual[key]:
            raise CheckpointError(f"{path}: metadata field {key!r} does not match its sha256: it was changed "
                                  "after the file was written (edited or corrupted); it decides the model, "
                                  "so the file is refused")


def _validate_metadata(path: Path, meta: dict[str, Any], header: dict[str, Any]) -> None:
    """Types, enum values and tensor names of the header: a malformed one is a CheckpointError."""
    from quant.config import config_from_dict
    from quant.errors import TernbenchError
    from quant.packing import PACKINGS

    def bad(key: str, what: str) -> CheckpointError:
        return CheckpointError(f"{path}: metadata field {key!r} {what} (corrupted file)")

    if meta["packing"] not in PACKINGS:
        raise bad("packing", f"names an unknown packing {meta['packing']!r}; valid: {', '.join(PACKINGS)}")
    if meta["float_dtype"] not in FLOAT_DTYPES:
        raise bad("float_dtype", f"names an unknown float dtype {meta['float_dtype']!r}; "
                                 f"valid: {', '.join(FLOAT_DTYPES)}")
    for key in ("model_cfg", "preprocess_cfg", "quant_config", "ternary", "tensor_sha256"):
        if not isinstance(meta[key], dict):
            raise bad(key, "is not a JSON object")
    if not isinstance(meta["random_weights"], bool):
        raise bad("random_weights", "is not true or false")
    try:
        cfg = config_from_dict(meta["quant_config"])
    except (TernbenchError, TypeError, ValueError) as e:
        raise bad("quant_config", f"is not a valid quant config ({e})") from None
    if cfg.TYPE != "ternary":
        raise bad("quant_config", f"is a {cfg.TYPE!r} config; packed checkpoints hold ternary weights")
    tensors = {k for k in header if k != "__metadata__"}
    for name, e in meta["ternary"].items():
        if not isinstance(e, dict) or any(k not in e for k in ENTRY_KEYS):
            raise bad("ternary", f"entry {name!r} lacks one of {', '.join(ENTRY_KEYS)}")
        if not (isinstance(e["shape"], list) and all(isinstance(d, int) and d >= 0 for d in e["shape"])
                and isinstance(e["n"], int) and isinstance(e["out_axis"], int)
                and -len(e["shape"]) <= e["out_axis"] < len(e["shape"])):
            raise bad("ternary", f"entry {name!r} has a malformed shape, n or out_axis")
        for part in ("qdata", "scale"):
            if f"{name}.{part}" not in tensors:
                raise CheckpointError(f"{path}: the ternary tensor {name!r} has no {name}.{part} in the file "
                                      "(a tensor was renamed or removed; corrupted file)")


def _weights_config(cfg: dict[str, Any] | None) -> dict[str, Any] | None:
    """An open_clip config without what does not shape the weights (the tokenizer's kwargs)."""
    if not cfg or "tokenizer_kwargs" not in cfg.get("text_cfg", {}):
        return cfg
    text = {k: v for k, v in cfg["text_cfg"].items() if k != "tokenizer_kwargs"}
    return {**cfg, "text_cfg": text}


def _arch_name(meta: dict[str, Any]) -> str:
    """An open_clip model name whose config is exactly the stored one (registered if needed)."""
    import open_clip

    from quant.origin import register_config

    arch, cfg = meta["arch"], meta["model_cfg"]
    if _weights_config(open_clip.get_model_config(arch)) == _weights_config(cfg):
        # Tokenizer kwargs may name files (a BPE path) where the saving machine had them; the
        # registered config of the same architecture knows where they are here.
        return arch
    name = f"{arch}-packed-{hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]}"
    if open_clip.get_model_config(name) is None:
        register_config(name, cfg)
    return name


@contextlib.contextmanager
def _skip_weight_init():
    """Make torch.nn.init a no-op while the architecture is built: every persistent tensor is
    overwritten by the file right after (strict load), so random init would only cost time
    (seconds for ViT-B-32). Non-persistent buffers (causal masks) are not init calls and stay."""
    import torch

    names = [n for n in ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_",
                         "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
                         "orthogonal_") if hasattr(torch.nn.init, n)]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


def load_packed(path: str | os.PathLike, device: str = "cpu", backend: str | None = None,
                activations: str = "int8"):
    """Rebuild the model of a packed file with no network and no original weights (eval mode).

    Every tensor is checked against its sha256, every ternary tensor against its shape
    and trit codes; any problem is a ``CheckpointError`` naming the file and tensor.

    ``backend``: None (default) gives the fake-quant model (float weights holding
    ``scale * trit``); ``"auto"`` (the kernel of ``device``) or another backend of
    ``quant.kernels.base.backend_choices()`` (``"cpu"``, ``"cpu-quads"``, ``"cpu-pairs"``, ``"fbgemm"``, ``"cuda"``,
    ``"packed"``, ``"reference"``) also swaps its ternary weights onto that kernel with
    ``activations`` ``"int8"`` (W1.58A8) or ``"float"`` (W1.58A16): ``quant.kernels.accelerate_``.

    The model carries the file's trits and scales (``quant.codes``), as a converted one does.
    """
    import open_clip
    import torch
    from safetensors import safe_open

    from quant.codes import CODES_PACKING, record_packed_codes
    from quant.config import config_from_dict
    from quant.origin import record_origin
    from quant.packing import PackingError, pack, unpack
    from quant.primitives import dequantize, scale_shape
    from quant.state import ParamInfo, QuantState, set_quant_state

    if backend is not None:  # bad kernel options fail before any reading
        from quant.errors import check_choice
        from quant.kernels.base import ACTIVATIONS, backend_choices

        check_choice("backend", backend, backend_choices())
        check_choice("activations", activations, ACTIVATIONS)
    path = Path(path)
    meta = read_metadata(path)
    qcfg, entries = meta["quant_config"], meta["ternary"]
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for malformed data
        raise CheckpointError(f"{path}: cannot read tensors ({e})") from None
    hashes = meta["tensor_sha256"]
    if set(hashes) != set(tensors):
        diff = sorted(set(hashes) ^ set(tensors))
        raise CheckpointError(f"{path}: tensors {diff[:5]} are missing or unexpected (corrupted file)")
    for k, t in tensors.items():
        if _tensor_sha256(t) != hashes[k]:
            raise CheckpointError(f"{path}: tensor {k!r} does not match its sha256 (corrupted file)")
    if _content_hash(hashes) != meta["content_sha256"]:
        raise CheckpointError(f"{path}: content hash mismatch (corrupted metadata)")

    state: dict[str, Any] = {}
    codes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (trits packed in CODES_PACKING, scale)
    for name, e in entries.items():
        q, s = tensors.pop(f"{name}.qdata"), tensors.pop(f"{name}.scale")
        shape = torch.Size(e["shape"])
        if shape.numel() != e["n"] or len(shape) < 2:
            raise CheckpointError(f"{path}: tensor {name!r}: shape {list(shape)} does not hold {e['n']} weights")
        w2d = (shape[e["out_axis"]], shape.numel() // shape[e["out_axis"]])
        want = scale_shape(w2d, qcfg["granularity"], qcfg["group_size"])
        if tuple(s.shape) != tuple(want):
            raise CheckpointError(f"{path}: tensor {name!r}: scale has shape {list(s.shape)}, expected {list(want)}")
        try:
            trits = unpack(q, e["n"], meta["packing"], name=name).reshape(shape)
        except PackingError as err:
            raise CheckpointError(f"{path}: {err}") from None
        state[name] = dequantize(trits, s, qcfg["granularity"], qcfg["group_size"], e["out_axis"], torch.float32)
        # The file's bytes when they are already in the codes' packing (unpack validated them; padding
        # past the last trit is never read back), so recording costs no second pass.
        codes[name] = (q if meta["packing"] == CODES_PACKING else pack(trits, CODES_PACKING, name=name), s)
    state.update(tensors)

    name = _arch_name(meta)
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # open_clip warns "initialized randomly"; the weights come next
    try:
        with _skip_weight_init():
            model = open_clip.create_model(name, device="cpu")
    except Exception as e:  # a format-1 file (no digest) whose model_cfg open_clip cannot build
        raise CheckpointError(f"{path}: metadata field 'model_cfg' does not describe a model open_clip can "
                              f"build ({type(e).__name__}: {e})") from None
    finally:
        logger.setLevel(level)
    own = model.state_dict()
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(f"{path}: tensor {k!r} has shape {list(v.shape)}, the {meta['arch']} "
                                  f"architecture expects {list(own[k].shape)}")
        if k in own and v.is_floating_point():
            state[k] = v.to(own[k].dtype)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not match the stored {meta['arch']} config: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=True)
    if meta["preprocess_cfg"]:
        # JSON made open_clip's tuples (size, mean, std) lists; give them back as tuples.
        pp = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["preprocess_cfg"].items()}
        open_clip.set_model_preprocess_cfg(model, pp)
    set_quant_state(model, QuantState(
        config=config_from_dict(qcfg), stage="converted",
        params={n: ParamInfo(kind=e["kind"], tower=e["tower"], out_axis=e["out_axis"]) for n, e in entries.items()}))
    for n, (qdata, scale) in codes.items():
        record_packed_codes(model, n, qdata, scale)
    record_origin(model, meta["arch"], meta["model_cfg"], preprocess_cfg=meta["preprocess_cfg"],
                  spec=meta["source_spec"], random_weights=meta["random_weights"], tokenizer=name)
    model = model.to(device).eval()
    if backend is not None:
        from quant.kernels.swap import accelerate_

        accelerate_(model, backend=backend, activations=activations)
    return model
