"""``ternbench quantize`` and ``ternbench inspect``: make a packed ternary checkpoint, read one back.

Heavy imports (torch, open_clip) happen inside the handlers so ``ternbench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from quant.config import GRANULARITIES, METHODS, PRESETS
from quant.errors import CheckpointError, QuantConfigError, check_choice
from quant.fileio import check_output_path

RANDOM_WEIGHTS_NOTE = "no pretrained weights: random initialisation"


def _choice(kind: str, valid) -> Callable[[str], str]:
    """argparse type that answers with our error style (valid options + closest match)."""
    def check(value: str) -> str:
        check_choice(kind, value, valid, argparse.ArgumentTypeError)
        return value
    return check


def add_quantize_parser(subparsers) -> None:
    q = subparsers.add_parser(
        "quantize", help="quantize an open_clip model to ternary and write a packed checkpoint",
        description="Quantize MODEL (ARCH[:PRETRAINED], ARCH:/path/to/checkpoint, hf-hub:ORG/REPO) to "
                    "ternary weights, print its statistics, and write a packed .safetensors file.")
    q.add_argument("model", metavar="MODEL", help="model spec, e.g. ViT-B-32, ViT-B-32:openai, hf-hub:ORG/REPO")
    q.add_argument("--variant", default="q-all", type=_choice("variant", list(PRESETS)),
                   help=f"which weights: {', '.join(PRESETS)} (default q-all)")
    q.add_argument("--method", type=_choice("method", METHODS), help=f"{', '.join(METHODS)} (default absmean)")
    q.add_argument("--threshold", type=float, help="absmean scale factor k: s = k * mean|W| (default 1.0)")
    q.add_argument("--granularity", type=_choice("granularity", GRANULARITIES),
                   help=f"one scale per {', '.join(GRANULARITIES)} (default tensor)")
    q.add_argument("--group-size", type=int, help="inputs per scale with --granularity group (default 128)")
    q.add_argument("--packing", default="base3", type=_choice("packing", ("base3", "2bit")),
                   help="base3: 5 trits a byte (1.6 bits); 2bit: 4 trits a byte (default base3)")
    q.add_argument("--float-dtype", default="fp32", type=_choice("float dtype", ("fp16", "fp32")),
                   help="dtype of the non-ternary tensors and scales in the file (default fp32: the "
                        "loaded model's outputs are bit-identical; fp16: a slightly smaller file)")
    q.add_argument("--out", metavar="FILE.safetensors", help="where to write the packed checkpoint "
                   "(omit to only print statistics)")
    q.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    q.add_argument("--json", action="store_true", help="print the statistics as JSON instead of a table")
    q.set_defaults(func=run_quantize)


def add_inspect_parser(subparsers) -> None:
    i = subparsers.add_parser(
        "inspect", help="print the statistics and metadata of a packed ternary checkpoint",
        description="Validate and load a packed .safetensors file (no network) and print what it holds.")
    i.add_argument("file", metavar="FILE", help="a packed checkpoint written by `ternbench quantize`")
    i.add_argument("--json", action="store_true", help="print metadata and statistics as JSON")
    i.set_defaults(func=run_inspect)


def _config(args):
    from quant.config import preset

    overrides = {k: v for k, v in (("method", args.method), ("threshold", args.threshold),
                                   ("granularity", args.granularity), ("group_size", args.group_size))
                 if v is not None}
    return preset(args.variant, **overrides)


def run_quantize(args) -> int:
    cfg = _config(args)  # validate the config before any model is built
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.suffix != ".safetensors":
            raise CheckpointError(f"--out {out}: a packed checkpoint must end in .safetensors "
                                  f"(e.g. {out.with_suffix('.safetensors')})")
        check_output_path(out, "--out")
        if out.exists() and not args.force:
            raise CheckpointError(f"--out {out} already exists; choose another path or pass --force to overwrite it")

    from bench.models import DEFAULT_VARIANT, build_model, parse_spec
    from quant.apply import quantize_
    from quant.checkpoint import save_packed
    from quant.stats import format_table, stats

    spec = parse_spec(args.model)
    if spec.variant != DEFAULT_VARIANT:
        raise QuantConfigError(f"{args.model}: give the variant with --variant, not @{spec.variant} "
                               f"(e.g. ternbench quantize {args.model.rsplit('@', 1)[0]} --variant {spec.variant})")
    if spec.source == "packed":
        raise QuantConfigError(f"{args.model} is already a packed ternary checkpoint; use `ternbench inspect`")
    built = build_model(spec)
    if built.info["random_weights"]:
        # With --json stdout stays pure JSON (the note is also in model.random_weights).
        print(f"{spec.raw}: {RANDOM_WEIGHTS_NOTE}", file=sys.stderr if args.json else sys.stdout)
    summary = quantize_(built.model, cfg)
    st = stats(built.model, packing=args.packing, float_dtype=args.float_dtype)
    written = None
    if out is not None:
        written = save_packed(built.model, out, args.packing, float_dtype=args.float_dtype, force=args.force,
                              spec=f"{spec.raw}@{args.variant}")
    if args.json:
        print(json.dumps({"model": built.info, "config": cfg.to_dict(), "stats": st.to_dict(),
                          "out": str(written) if written else None,
                          "file_bytes": os.path.getsize(written) if written else None}, indent=2))
        return 0
    print(f"{spec.raw} -> {args.variant}: {summary['n_tensors']} tensors ternary "
          f"({100 * summary['share_quantized']:.2f}% of {summary['n_params']:,} parameters); "
          f"{cfg.method}, threshold {cfg.threshold:g}, granularity {cfg.granularity}"
          + (f" (group {cfg.group_size})" if cfg.granularity == "group" else ""))
    print(format_table(st))
    if written:
        size = os.path.getsize(written)
        print(f"wrote {written} ({size:,} bytes, {st.total['bytes_fp32'] / size:.2f}x smaller than the fp32 "
              f"weights, {st.total['bytes_fp16'] / size:.2f}x smaller than fp16)")
    return 0


def run_inspect(args) -> int:
    from quant.checkpoint import load_packed, read_metadata
    from quant.stats import format_table, stats

    meta = read_metadata(args.file)
    model = load_packed(args.file)  # validates every tensor (hashes, shapes, trit codes)
    st = stats(model, packing=meta["packing"], float_dtype=meta["float_dtype"])
    shown = {k: meta[k] for k in ("format_version", "packing", "float_dtype", "arch", "source_spec",
                                  "random_weights", "content_sha256", "file_bytes", "quant_config")}
    if args.json:
        print(json.dumps({"file": str(args.file), "metadata": shown, "model_cfg": meta["model_cfg"],
                          "stats": st.to_dict()}, indent=2))
        return 0
    q = meta["quant_config"]
    print(f"{args.file}: ternbench packed checkpoint v{meta['format_version']}, {meta['packing']} packing, "
          f"{meta['float_dtype']} floats")
    print(f"  model:   {meta['arch']} from {meta['source_spec']}"
          + (f" ({RANDOM_WEIGHTS_NOTE})" if meta["random_weights"] else ""))
    print(f"  quant:   scope {q['scope']}, towers {q['towers']}, {q['method']} (threshold {q['threshold']:g}), "
          f"granularity {q['granularity']}" + (f" (group {q['group_size']})" if q["granularity"] == "group" else ""))
    print(f"  size:    {meta['file_bytes']:,} bytes on disk, {st.total['bytes_fp32'] / meta['file_bytes']:.2f}x "
          f"smaller than fp32, {st.total['bytes_fp16'] / meta['file_bytes']:.2f}x than fp16")
    print(f"  sha256:  {meta['content_sha256']} (content); "
          + ("every metadata field matches its digest" if meta["format_version"] >= 2
             else "format 1: no metadata digest, the header is validated but not hash-checked"))
    print(format_table(st))
    return 0
