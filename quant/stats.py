"""Weight statistics of a model: what is ternary, how sparse, how many bits, how small packed.

``stats(model)`` works on a quantized model, a model loaded from a packed file, and a
float model (0% ternary). Sizes are those of the weights themselves (what
``save_packed`` writes, without the file header): ternary tensors packed plus their
scales, every other tensor in ``float_dtype``. ``format_table`` renders it for the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quant.packing import get_format

FLOAT_BYTES = {"fp16": 2, "fp32": 4}


@dataclass
class Stats:
    """``total``: one dict for the model; ``layers``: one dict per parameter tensor."""

    total: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "layers": self.layers}


def _ratios(row: dict[str, Any]) -> dict[str, Any]:
    packed = max(row["bytes_packed"], 1)
    row["bits_per_weight"] = 8 * row["bytes_packed"] / max(row["params"], 1)
    row["compression_vs_fp32"] = row["bytes_fp32"] / packed
    row["compression_vs_fp16"] = row["bytes_fp16"] / packed
    return row


def stats(model, packing: str = "base3", float_dtype: str = "fp32") -> Stats:
    """Per-tensor and total statistics (see module docstring); no weights are modified."""
    import torch

    from quant.primitives import scale_shape, to_out_first
    from quant.state import quant_state
    from quant.targets import _plain_named_parameters, get_param

    fmt = get_format(packing)
    fbytes = FLOAT_BYTES[float_dtype]
    state = quant_state(model)
    ternary = state.params if state is not None and state.ternary else {}
    layers = []
    with torch.no_grad():
        for name in dict.fromkeys([n for n, _ in _plain_named_parameters(model)] + list(ternary)):  # + swapped by quant.kernels
            w = get_param(model, name)  # the quantized value, also for a prepared (QAT) model
            n = w.numel()
            row: dict[str, Any] = {"name": name, "shape": list(w.shape), "params": n,
                                   "bytes_fp32": 4 * n, "bytes_fp16": 2 * n}
            if name in ternary:
                meta = ternary[name]
                w2d = to_out_first(w, meta.out_axis)
                n_scales = int(torch.Size(scale_shape(tuple(w2d.shape), state.config.granularity,
                                                      state.config.group_size)).numel())
                zeros = int((w == 0).sum())
                row.update(kind=meta.kind, tower=meta.tower, ternary=True, ternary_params=n,
                           share_ternary=1.0, zeros=zeros, sparsity=zeros / max(n, 1),
                           bytes_packed=fmt.nbytes(n) + fbytes * n_scales)
            else:
                row.update(kind="float", tower="vision" if name.startswith("visual.") else "text",
                           ternary=False, ternary_params=0, share_ternary=0.0, zeros=0, sparsity=None,
                           bytes_packed=fbytes * n)
            layers.append(_ratios(row))
    n_params = sum(r["params"] for r in layers)
    n_tern = sum(r["ternary_params"] for r in layers)
    zeros = sum(r["zeros"] for r in layers)
    total = _ratios({
        "name": "total", "params": n_params, "ternary_params": n_tern,
        "share_ternary": n_tern / max(n_params, 1),
        "sparsity": zeros / n_tern if n_tern else None,
        "tensors": len(layers), "ternary_tensors": sum(r["ternary"] for r in layers),
        "bytes_fp32": sum(r["bytes_fp32"] for r in layers), "bytes_fp16": sum(r["bytes_fp16"] for r in layers),
        "bytes_packed": sum(r["bytes_packed"] for r in layers),
        "packing": fmt.name, "float_dtype": float_dtype,
        "quant_config": state.config.to_dict() if state is not None else None,
    })
    return Stats(total, layers)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


def _line(r: dict[str, Any], name: str, kind: str) -> list[str]:
    sp = r.get("sparsity")
    return [name, kind, f"{r['params']:,}", f"{100 * r['share_ternary']:.1f}%",
            "-" if sp is None else f"{100 * sp:.1f}%", f"{r['bits_per_weight']:.2f}",
            _fmt_bytes(r["bytes_fp32"]), _fmt_bytes(r["bytes_fp16"]), _fmt_bytes(r["bytes_packed"]),
            f"{r['compression_vs_fp32']:.2f}x", f"{r['compression_vs_fp16']:.2f}x"]


def format_table(s: Stats, layers: bool = True) -> str:
    """A plain-text table: every ternary tensor (``layers=True``), float tensors summed, total."""
    header = ["tensor", "kind", "params", "ternary", "sparsity", "bits/w", "fp32", "fp16", "packed",
              "vs fp32", "vs fp16"]
    rows = []
    if layers:
        rows += [_line(r, r["name"], r["kind"]) for r in s.layers if r["ternary"]]
    floats = [r for r in s.layers if not r["ternary"]]
    if floats:
        agg = _ratios({"params": sum(r["params"] for r in floats), "share_ternary": 0.0, "sparsity": None,
                       "bytes_fp32": sum(r["bytes_fp32"] for r in floats),
                       "bytes_fp16": sum(r["bytes_fp16"] for r in floats),
                       "bytes_packed": sum(r["bytes_packed"] for r in floats)})
        rows.append(_line(agg, f"float tensors ({len(floats)})", "float"))
    rows.append(_line(s.total, "total", f"{s.total['packing']}"))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt_row = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths)))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt_row(header), sep, *map(fmt_row, rows[:-1]), sep, fmt_row(rows[-1])])
