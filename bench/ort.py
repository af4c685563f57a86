"""ONNX Runtime variants ``ort-fp32`` and ``ort-int8``: any open_clip model exported to ONNX and
run by onnxruntime, the runtime a deployment would use instead of eager PyTorch.

- Export: both towers, each its own graph with a dynamic batch axis: the image tower maps
  pixels to the embedding, the text tower maps token ids to the embedding (open_clip's
  argmax-EOT pooling is part of the graph). torch.onnx's TorchScript exporter
  (``dynamo=False``) traces ``encode_image`` / ``encode_text`` exactly as open_clip runs them.
- ``int8``: ``onnxruntime.quantization.quantize_dynamic`` of the fp32 graphs: int8 weights
  (per output channel by default), activations quantized per call at run time.
- Cache: ``<cache>/onnx/<model key>/<form key>/{image,text}.onnx`` plus ``export.json``. The
  model key hashes the architecture, every tensor of the model and the library versions; the
  form key hashes the export / quantization settings. Each folder is written under a temporary
  name and renamed into place, so a crash never leaves a half-written graph that later loads.
- Run: ``OrtCLIP``, an ``nn.Module`` with open_clip's ``encode_image`` / ``encode_text`` on torch
  tensors (same ``normalize`` argument), one ``InferenceSession`` a tower with
  ``intra_op_num_threads = torch.get_num_threads()``, like every other variant.

onnx and onnxruntime are imported only when an ORT variant is built; without them only those
models' cells fail, with the command that installs them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.models import VARIANT_INFO_ATTR, ModelSpecError
from quant.errors import TernbenchError, did_you_mean
from quant.fileio import atomic_write_json, cache_dir
from quant.state import recorded_origin, set_origin

TOWERS = ("image", "text")
EXPORTER = "torch.onnx.export, TorchScript exporter (dynamo=False)"
INSTALL_HINT = "pip install onnx onnxruntime (both are dependencies of ternbench: pip install -e .)"
WEIGHT_TYPES = ("QInt8", "QUInt8")
INPUT, OUTPUT = "input", "embedding"


class OrtError(TernbenchError, RuntimeError):
    """An ORT variant that cannot be built here (runtime missing, export or quantization failed)."""


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrtConfig:
    """How a model is exported and run. ``form``: ``fp32`` | ``int8`` (dynamic quantization).

    ``per_channel`` / ``weight_type`` / ``reduce_range`` are passed to
    ``onnxruntime.quantization.quantize_dynamic`` (``int8`` only).
    """

    form: str = "fp32"
    opset: int = 17
    per_channel: bool = True
    weight_type: str = "QInt8"
    reduce_range: bool = False

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise OrtError(f"unknown ONNX Runtime form {self.form!r}{did_you_mean(self.form, FORMS)}; "
                           f"valid: {', '.join(FORMS)}")
        if not isinstance(self.opset, int) or isinstance(self.opset, bool) or not 14 <= self.opset <= 20:
            raise OrtError(f"ONNX opset must be an integer from 14 to 20, got {self.opset!r}")
        for name in ("per_channel", "reduce_range"):
            if not isinstance(getattr(self, name), bool):
                raise OrtError(f"ONNX Runtime {name} must be true or false, got {getattr(self, name)!r}")
        if self.weight_type not in WEIGHT_TYPES:
            raise OrtError(f"unknown weight_type {self.weight_type!r}{did_you_mean(self.weight_type, WEIGHT_TYPES)};"
                           f" valid: {', '.join(WEIGHT_TYPES)}")

    def export_settings(self) -> dict[str, Any]:
        """What decides the fp32 graphs."""
        return {"exporter": EXPORTER, "opset": self.opset, "dynamic_axes": {INPUT: [0], OUTPUT: [0]}}

    def quantization(self) -> dict[str, Any] | None:
        """What decides the int8 graphs (None for fp32): recorded in every cell."""
        if self.form != "int8":
            return None
        return {"method": "onnxruntime.quantization.quantize_dynamic", "per_channel": self.per_channel,
                "weight_type": self.weight_type, "reduce_range": self.reduce_range,
                "activations": "uint8, quantized per call (DynamicQuantizeLinear)"}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _quantize_int8(src: Path, dst: Path, cfg: OrtConfig) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():  # it logs a pre-processing suggestion on the root logger for every graph
        quantize_dynamic(src, dst, per_channel=cfg.per_channel, reduce_range=cfg.reduce_range,
                         weight_type=getattr(QuantType, cfg.weight_type),
                         use_external_data_format=src.stat().st_size >= _PROTOBUF_LIMIT)


# form -> how its graphs are made from the fp32 graphs (None: the fp32 graphs themselves)
FORMS: dict[str, Callable[[Path, Path, OrtConfig], None] | None] = {"fp32": None, "int8": _quantize_int8}
_PROTOBUF_LIMIT = 2 * 1024**3 - 1024**2  # one ONNX protobuf holds < 2 GiB; larger graphs keep weights outside


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


# ---------------------------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------------------------


def import_runtime() -> tuple[Any, Any]:
    """(onnx, onnxruntime), or an ``OrtError`` that says how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise OrtError(f"the ONNX Runtime variants need onnx and onnxruntime, which are not importable here "
                       f"({e}); install them: {INSTALL_HINT}") from None
    return onnx, onnxruntime


def providers_for(device: str, available: list[str]) -> list[str]:
    """The execution providers for ``device``: the CPU one on CPU, CUDA first (CPU for the rest) on a GPU."""
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise OrtError(f"this onnxruntime has no CUDAExecutionProvider (it has: {', '.join(available)}); "
                           "install the GPU build (pip install onnxruntime-gpu) or run the ORT variants "
                           "with --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def versions() -> dict[str, str]:
    onnx, ort = import_runtime()
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}


# ---------------------------------------------------------------------------------------------
# Export and cache
# ---------------------------------------------------------------------------------------------


class _Tower(nn.Module):
    """One tower of a CLIP model as a module the exporter can trace: ``encode_image`` or ``encode_text``."""

    def __init__(self, model: nn.Module, tower: str):
        super().__init__()
        self.model = model
        self.encode = getattr(model, f"encode_{tower}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)


def image_size(model: nn.Module) -> tuple[int, int]:
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    return (size, size) if isinstance(size, int) else tuple(size)


def context_length(model: nn.Module) -> int:
    n = getattr(model, "context_length", None) or getattr(getattr(model, "text", None), "context_length", None)
    if not isinstance(n, int):
        raise OrtError("cannot tell the text context length of this model (no .context_length); "
                       "the ONNX Runtime variants need an open_clip CLIP")
    return n


def example_inputs(model: nn.Module, batch: int = 2) -> dict[str, torch.Tensor]:
    """Inputs for tracing. Batch 2, so the exporter cannot fold the batch size into a constant."""
    h, w = image_size(model)
    n = context_length(model)
    tokens = torch.zeros(batch, n, dtype=torch.long)
    tokens[:, 0], tokens[:, 1] = 1, 2  # the highest id marks the end of text, as the tokenizer's EOT does
    return {"image": torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(0)), "text": tokens}


def model_key(model: nn.Module) -> str:
    """A hash of what decides the exported graphs: architecture, config, every tensor, library versions."""
    h = hashlib.sha256()
    origin = recorded_origin(model)
    h.update(json.dumps({"repr": repr(model), "model_cfg": origin.model_cfg if origin else None, "versions": versions(),
                         "image_size": image_size(model), "context_length": context_length(model)},
                        sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"\n{name}:{t.dtype}:{t.numel()}\n".encode())
        h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()[:24]


def _form_key(cfg: OrtConfig) -> str:
    settings = {"export": cfg.export_settings(), "quantization": cfg.quantization()}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return f"{cfg.form}-{digest}"


@contextlib.contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final``, renamed onto it on success (removed on any error)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "export.json").is_file():  # another process finished it first: keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_fp32(model: nn.Module, folder: Path, cfg: OrtConfig) -> None:
    inputs = example_inputs(model)
    # nn.MultiheadAttention's inference fast path (taken under no_grad) is one fused op that the
    # exporter cannot translate; the regular path exports to plain MatMul/Softmax nodes.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        for tower in TOWERS:
            _export_tower(model, tower, inputs[tower], folder / f"{tower}.onnx", cfg)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _export_tower(model: nn.Module, tower: str, example: torch.Tensor, path: Path, cfg: OrtConfig) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(_Tower(model, tower), (example,), str(path), dynamo=False,
                              input_names=[INPUT], output_names=[OUTPUT], opset_version=cfg.opset,
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    except Exception as e:  # the exporter raises many types; the user needs the tower and the reason
        raise OrtError(f"exporting the {tower} tower to ONNX failed ({EXPORTER}, opset {cfg.opset}): "
                       f"{type(e).__name__}: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0][:400] if str(e) else ""


def _tower_files(folder: Path) -> dict[str, Path]:
    return {tower: folder / f"{tower}.onnx" for tower in TOWERS}


def export(model: nn.Module, cfg: OrtConfig = OrtConfig(), root: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The folder holding ``image.onnx`` and ``text.onnx`` of ``model`` in ``cfg.form``, exported (and
    quantized) on first use, then reused; and its ``export.json`` record (``reused``: from the cache)."""
    import_runtime()
    root = Path(root) if root is not None else cache_dir() / "onnx"
    model = model.eval()
    key = model_key(model)
    fp32 = OrtConfig(opset=cfg.opset)
    base = root / key / _form_key(fp32)
    t0 = time.perf_counter()
    reused = (base / "export.json").is_file()
    if not reused:
        with _staging(base) as tmp:
            _export_fp32(model, tmp, fp32)
            atomic_write_json(tmp / "export.json", _record(key, fp32, tmp, time.perf_counter() - t0))
    make = FORMS[cfg.form]
    folder = base if make is None else root / key / _form_key(cfg)
    if make is not None and not (folder / "export.json").is_file():
        reused = False
        with _staging(folder) as tmp:
            for tower, src in _tower_files(base).items():
                try:
                    make(src, tmp / f"{tower}.onnx", cfg)
                except Exception as e:
                    raise OrtError(f"{cfg.form} conversion of the {tower} tower failed: "
                                   f"{type(e).__name__}: {_first_line(e)}") from e
            atomic_write_json(tmp / "export.json", _record(key, cfg, tmp, time.perf_counter() - t0))
    record = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    return folder, record | {"reused": reused}


def _record(key: str, cfg: OrtConfig, folder: Path, seconds: float) -> dict[str, Any]:
    return {"model_key": key, "config": cfg.to_dict(), "export": cfg.export_settings(),
            "quantization": cfg.quantization(), "versions": versions(), "seconds": round(seconds, 3),
            "file_bytes": {tower: _bytes(p) for tower, p in _tower_files(folder).items()}}


def _bytes(graph: Path) -> int:
    """Bytes of a graph file plus any weights stored beside it (graphs over 2 GiB)."""
    return sum(p.stat().st_size for p in graph.parent.iterdir() if p.is_file() and p.name != "export.json"
               and (p == graph or p.name.startswith(graph.stem + ".")))


# ---------------------------------------------------------------------------------------------
# The model the runner sees
# ---------------------------------------------------------------------------------------------


class TowerMeta:
    """What the bench reads from ``model.visual`` besides running it: preprocessing and image size."""

    def __init__(self, preprocess_cfg: dict[str, Any], image_size: tuple[int, int]):
        self.preprocess_cfg = preprocess_cfg
        self.image_size = image_size


class OrtCLIP(nn.Module):
    """open_clip's ``encode_image`` / ``encode_text`` run by ONNX Runtime; torch tensors in and out.

    Inputs go to the session as host arrays, outputs come back as fp32 tensors on the input's
    device (on CUDA the timings therefore include the host copies).
    """

    def __init__(self, folder: Path, device: str, params: int, visual: TowerMeta, context_length: int,
                 threads: int | None = None):
        super().__init__()
        _, ort = import_runtime()
        self.folder = Path(folder)
        self.files = _tower_files(self.folder)
        self.params = params
        self.visual = visual
        self.context_length = context_length
        self.threads = threads or torch.get_num_threads()
        self.providers = providers_for(device, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.sessions = {tower: ort.InferenceSession(str(path), options, providers=self.providers)
                         for tower, path in self.files.items()}

    def _run(self, tower: str, x: torch.Tensor, dtype: torch.dtype, normalize: bool) -> torch.Tensor:
        array = x.detach().to("cpu", dtype).contiguous().numpy()
        out = torch.from_numpy(self.sessions[tower].run([OUTPUT], {INPUT: array})[0]).to(x.device)
        return nn.functional.normalize(out, dim=-1) if normalize else out

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self._run("image", image, torch.float32, normalize)

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self._run("text", text, torch.long, normalize)

    def file_bytes(self) -> int:
        return sum(_bytes(p) for p in self.files.values())

    def kernel_nbytes(self) -> int:
        """The graphs' weights in memory: what the sessions load (the ONNX files)."""
        return self.file_bytes()

    def storage_stats(self) -> tuple[Any, str]:
        """``quant.stats``-shaped sizes of the ONNX files, against the exported model's parameters."""
        from quant.stats import Stats

        stored = self.file_bytes()
        total = {"name": "total", "params": self.params, "ternary_params": 0, "share_ternary": 0.0,
                 "sparsity": None, "bytes_fp32": 4 * self.params, "bytes_fp16": 2 * self.params,
                 "bytes_packed": stored, "bits_per_weight": 8 * stored / max(self.params, 1),
                 "compression_vs_fp32": 4 * self.params / max(stored, 1),
                 "compression_vs_fp16": 2 * self.params / max(stored, 1)}
        return Stats(total), f"the ONNX files of both towers ({', '.join(p.name for p in self.files.values())})"


def build(model: nn.Module, device: str, cfg: OrtConfig, root: Path | None = None) -> OrtCLIP:
    """Export ``model`` (cached) and return the ``OrtCLIP`` that runs it on ``device``."""
    model = model.to("cpu").eval()  # the graphs are device-independent; trace on the host
    folder, record = export(model, cfg, root)
    origin = recorded_origin(model)
    ort_model = OrtCLIP(folder, device, sum(p.numel() for p in model.parameters()),
                        TowerMeta(dict(model.visual.preprocess_cfg), image_size(model)), context_length(model))
    if origin is not None:
        set_origin(ort_model, origin)
    ort_model.__dict__[VARIANT_INFO_ATTR] = {
        "runtime": "onnxruntime", "form": cfg.form, "exporter": EXPORTER, "opset": cfg.opset,
        "quantization": cfg.quantization(), "providers": ort_model.providers,
        "intra_op_num_threads": ort_model.threads, "versions": record["versions"],
        "files": {t: str(p) for t, p in ort_model.files.items()}, "file_bytes": record["file_bytes"],
        "model_key": record["model_key"], "export_s": record["seconds"], "reused": record["reused"],
    }
    return ort_model


def build_variant(model: nn.Module, ctx: Any, *, form: str) -> OrtCLIP:
    """The variant ``ort-FORM`` (declared in ``bench.models``): ``model`` exported and run by ONNX Runtime."""
    try:
        return build(model, ctx.device, OrtConfig(form=form))
    except OrtError as e:
        raise ModelSpecError(f"{ctx.spec.raw}: {e}") from e
