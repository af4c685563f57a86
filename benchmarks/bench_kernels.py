"""Benchmark ternary kernels against float baselines: per layer shape and end to end.

Variants (one run, side by side, so ratios are comparable on a noisy machine):
  fp32, bf16 (CPU) / fp16 (CUDA), ternary Q-ALL W1.58A16 (fake-quant float weights),
  ternary Q-ALL W1.58A16 with int8-held weights (``a16-int8mem``) or 2-bit packed weights
  (``a16-2bit``: on CUDA read by the 2-bit Triton GEMM, elsewhere unpacked per call), ternary
  Q-ALL W1.58A8 on the device's kernel (``a8``) and, on CUDA, on the 2-bit GEMM (``a8-2bit``).
Measures: median and IQR latency of encode_image / encode_text at each batch (every variant of a
measurement timed in interleaved rounds by torch.utils.benchmark.Timer, the suite's own timer),
paired ratios vs fp32 and vs the device's half precision with 95% bootstrap intervals over rounds, resident weight bytes (parameters, buffers
and kernel-held weights), peak memory of one call (resident weights + the growth during the call: CUDA
max_memory_allocated, CPU sampled RSS; on the CPU the allocator keeps freed pages, so
after the warm-up the RSS growth reads near 0 and the weights dominate). Per layer: every linear shape of the architecture at batch x tokens rows.
Random weights (``open_clip.create_model(arch)``: no download). Writes CSV and JSON rows.

    python benchmarks/bench_kernels.py --device cpu --archs ViT-B-32 --out benchmarks/out
    python benchmarks/bench_kernels.py --device cuda --quick
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import os
import platform
import sys
import threading
import time
import warnings
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import timing  # noqa: E402  (after the path set-up above)
from bench.kernel_timing import timed  # noqa: E402

# Benchmark variant -> accelerate_ arguments (on top of the fake-quant Q-ALL model).
ACCELERATED = {
    "q-all-a8": {"activations": "int8"},
    "q-all-a8-pairs": {"activations": "int8", "backend": "cpu-pairs"},
    "q-all-a8-fbgemm": {"activations": "int8", "backend": "fbgemm"},
    "q-all-a8-quads": {"activations": "int8", "backend": "cpu-quads"},
    "q-all-a8-onednn": {"activations": "int8", "backend": "onednn"},
    "q-all-a8-portable": {"activations": "int8", "backend": "cpu-quads-portable"},
    "q-all-a16-int8mem": {"activations": "float"},
    "q-all-a16-2bit": {"activations": "float", "backend": "packed"},
    "q-all-a8-2bit": {"activations": "int8", "backend": "packed"},
    # LayerNorms and GELUs as their own ops (the default fuses them into the CUDA kernels).
    "q-all-a8-unfused": {"activations": "int8", "fuse": False},
}
HALF = {"cpu": ("bf16", torch.bfloat16), "cuda": ("fp16", torch.float16)}
# The CPU's other W1.58A8 kernels, timed beside q-all-a8 (the default one) by default; and on request
# the quad-table kernel's portable form (what ARM and pre-AVX2 CPUs build).
CPU_OTHER_A8 = ("q-all-a8-quads", "q-all-a8-onednn", "q-all-a8-pairs", "q-all-a8-fbgemm")
CPU_ON_REQUEST_A8 = ("q-all-a8-portable",)


# ------------------------------------------------------------------------------ timing


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn, device: str) -> int:
    """Peak memory one call adds above the level before it (CUDA allocator, or sampled RSS).

    The benchmark holds several variants at once, so the absolute peak would count all of
    them; rows add this growth to the variant's own resident weight bytes.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return max(0, torch.cuda.max_memory_allocated() - before)
    base, peak, stop = _rss(), [0], threading.Event()

    def loop():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            stop.wait(0.001)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    fn()
    stop.set()
    t.join()
    return max(0, max(peak[0], _rss()) - base)


# ------------------------------------------------------------------------------ variants


def to_half(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """CUDA: every tensor fp16 (open_clip's pure fp16; its mixed ``convert_weights_to_lp`` feeds fp16
    activations to fp32 LayerNorms, which this torch rejects on CUDA). CPU: open_clip's bf16 cast."""
    import open_clip

    if device == "cuda":
        return model.half()
    open_clip.convert_weights_to_lp(model, dtype=torch.bfloat16)
    return model


def build_variants(arch: str, device: str, names: list[str],
                   threshold: float = 1.0) -> dict[str, tuple[torch.nn.Module, torch.dtype]]:
    """``{name: (model, input dtype)}`` for the requested variants, from one random-weight model
    (ternary variants: Q-ALL absmean with ``threshold``)."""
    import open_clip

    from quant import preset, quantize_
    from quant.kernels import accelerate_

    torch.manual_seed(0)
    # Built once, moved first: copying and quantizing on the GPU is much faster than on a CPU.
    base = open_clip.create_model(arch).eval().to(device)
    half_name, half = HALF[device]
    # On CUDA the ternary models run in fp16 around the kernels (the paper's baseline precision).
    act_dtype = half if device == "cuda" else torch.float32
    out: dict[str, tuple[torch.nn.Module, torch.dtype]] = {}
    tern = None
    if any(n.startswith("q-all") for n in names):
        tern = copy.deepcopy(base)
        quantize_(tern, preset("q-all", threshold=threshold))
    for name in names:
        if name == "fp32":
            out[name] = (base.to(device), torch.float32)
        elif name == half_name:
            out[name] = (to_half(copy.deepcopy(base), device), half)
        elif name == "q-all-a16":
            m = copy.deepcopy(tern)
            out[name] = (to_half(m, device) if device == "cuda" else m, act_dtype)
        elif name in ACCELERATED:
            m = copy.deepcopy(tern)
            if device == "cuda":
                m = to_half(m, device)
            accelerate_(m, **ACCELERATED[name])
            out[name] = (m, act_dtype)
        else:
            raise SystemExit(f"unknown variant {name!r}")
    del base, tern
    return out


def inputs(model, arch: str, batch: int, device: str, dtype: torch.dtype):
    import open_clip

    size = model.visual.image_size
    size = size if isinstance(size, tuple) else (size, size)
    images = torch.randn(batch, 3, *size, device=device, dtype=dtype)
    texts = [f"a photo of a number {i} thing with some words" for i in range(batch)]
    tokens = open_clip.get_tokenizer(arch)(texts).to(device)
    return images, tokens


# ------------------------------------------------------------------------------ benchmarks


def _row(lat: timing.Latency, **fields) -> dict:
    return fields | {"median_ms": lat.median * 1e3, "iqr_ms": lat.iqr * 1e3, "rounds": len(lat.rounds),
                     "round_medians_ms": [m * 1e3 for m in lat.round_medians], "timer": timing.TIMER}


def bench_e2e(arch, device, variants, batches, warmup, repeats, rows, modes, save=lambda: None):
    """Every variant at a (batch, tower, mode) timed together in interleaved rounds."""
    from quant.kernels import resident_weight_bytes

    wbytes = {name: resident_weight_bytes(model) for name, (model, _) in variants.items()}
    for batch in batches:
        for tower in ("image", "text"):
            save()  # what is measured so far survives a timeout
            fns, peaks = {}, {}
            for name, (model, dtype) in variants.items():
                images, tokens = inputs(model, arch, batch, device, dtype)
                fn = partial(model.encode_image, images) if tower == "image" else partial(model.encode_text, tokens)
                try:
                    with torch.inference_mode():
                        peaks[name] = peak_memory(fn, device)
                except Exception as e:  # one failing variant must not lose the others' numbers
                    print(f"  {arch} {tower} b{batch} {name}: FAILED {type(e).__name__}: {e}", flush=True)
                    continue
                fns[name] = fn
            for mode in modes:
                with torch.inference_mode():
                    lats = timed(fns, device, repeats, graphs=mode == "graph", warmup=warmup)
                for name, lat in lats.items():
                    rows.append(_row(lat, kind="e2e", mode=mode, arch=arch, tower=tower, batch=batch, shape="",
                                     variant=name, weight_bytes=wbytes[name], activation_peak_bytes=peaks[name],
                                     peak_memory_bytes=wbytes[name] + peaks[name]))
                    print(f"  {arch} {tower:5s} b{batch:<3d} {mode:5s} {name:18s} {lat.median * 1e3:9.3f} ms "
                          f"(IQR {lat.iqr * 1e3:.3f})", flush=True)


def linear_shapes(arch: str) -> list[tuple[str, int, int, int]]:
    """``(tower, tokens, in, out)`` of every distinct linear shape (MLP and attention) of ``arch``."""
    import open_clip

    cfg = open_clip.get_model_config(arch)
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    tokens_v = (v["image_size"] // v["patch_size"]) ** 2 + 1
    shapes = []
    for tower, width, tokens, ratio in (("image", v["width"], tokens_v, v.get("mlp_ratio", 4.0)),
                                        ("text", t["width"], t.get("context_length", 77), t.get("mlp_ratio", 4.0))):
        hidden = int(width * ratio)
        for k, n in ((width, 3 * width), (width, width), (width, hidden), (hidden, width)):
            shapes.append((tower, tokens, k, n))
    return shapes


def bench_layers(arch, device, batches, warmup, repeats, rows, modes, threshold=1.0, names=None):
    from quant import preset
    from quant.kernels import TernaryLinear
    from quant.primitives import ternary_quantize

    half_name, half = HALF[device]
    act_dtype = half if device == "cuda" else torch.float32
    g = torch.Generator().manual_seed(0)
    for tower, tokens, k, n in linear_shapes(arch):
        # the trits absmean gives a Gaussian weight (31% zeros at threshold 1, 58% at 2)
        trits, _ = ternary_quantize(torch.randn(n, k, generator=g), preset("q-all", threshold=threshold))
        trits = trits.to(device=device, dtype=torch.int8)
        scale = torch.tensor([0.02], device=device)
        bias = torch.randn(n, device=device)
        w = torch.randn(n, k, device=device)
        terns = {"q-all-a8": TernaryLinear(trits, scale, bias, "auto", "int8", act_dtype)}
        if device == "cpu":  # the CPU's other W1.58A8 kernels, side by side (the requested ones)
            for name in CPU_OTHER_A8 + CPU_ON_REQUEST_A8:
                if (name in CPU_OTHER_A8) if names is None else (name in names):
                    terns[name] = TernaryLinear(trits, scale, bias, ACCELERATED[name]["backend"], "int8", act_dtype)
        for batch in batches:
            m = batch * tokens
            x = torch.randn(m, k, device=device)
            xh, wh, bh = x.to(half), w.to(half), bias.to(half)
            xa = x.to(act_dtype)
            cases = {
                "fp32": partial(F.linear, x, w, bias),
                half_name: partial(F.linear, xh, wh, bh),
                **{name: partial(tern, xa) for name, tern in terns.items()},
            }
            if names is not None:  # the requested variants (fp32 always: the ratios' baseline)
                cases = {name: fn for name, fn in cases.items() if name in names or name == "fp32"}
            for mode in modes:
                with torch.inference_mode():
                    lats = timed(cases, device, repeats, graphs=mode == "graph", warmup=warmup)
                for name, lat in lats.items():
                    rows.append(_row(lat, kind="layer", mode=mode, arch=arch, tower=tower, batch=batch,
                                     shape=f"{m}x{k}x{n}", variant=name,
                                     weight_bytes=({"fp32": 4 * n * k, half_name: 2 * n * k}[name]
                                                   if name not in terns else terns[name].kernel_nbytes()),
                                     peak_memory_bytes=None))
                print(f"  layer {tower:5s} {mode:5s} {m}x{k}x{n}: "
                      + "  ".join(f"{k_} {v.median * 1e3:.4f} ms" for k_, v in lats.items()), flush=True)


def add_ratios(rows: list[dict], device: str) -> None:
    """``speedup_vs_fp32`` / ``speedup_vs_<half>`` (baseline time / this time, paired over the
    interleaved rounds) with ``_lo`` / ``_hi`` (95% bootstrap interval), and memory ratios."""
    half_name = HALF[device][0]
    key = lambda r: (r["kind"], r.get("mode"), r["arch"], r["tower"], r["batch"], r["shape"])  # noqa: E731
    by = {(key(r), r["variant"]): r for r in rows}
    for r in rows:
        for base in ("fp32", half_name):
            b = by.get((key(r), base))
            ratio = timing.paired_ratio(b["round_medians_ms"], r["round_medians_ms"]) if b else None
            r[f"speedup_vs_{base}"] = ratio.value if ratio else None
            r[f"speedup_vs_{base}_lo"] = ratio.low if ratio else None
            r[f"speedup_vs_{base}_hi"] = ratio.high if ratio else None
            r[f"weight_ratio_vs_{base}"] = (b["weight_bytes"] / r["weight_bytes"]
                                            if b and r["weight_bytes"] else None)


def print_table(rows: list[dict], device: str) -> None:
    half_name = HALF[device][0]
    cols = ["kind", "mode", "arch", "tower", "batch", "shape", "variant", "median_ms", "iqr_ms",
            "speedup_vs_fp32", f"speedup_vs_{half_name}", "weight_bytes", "weight_ratio_vs_fp32", "peak_memory_bytes"]
    fmt = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731

    def cell(r, c):
        if c.startswith("speedup_vs_") and r.get(c) is not None:  # the ratio with its interval
            if r["variant"] == c.removeprefix("speedup_vs_"):
                return "baseline"
            lo, hi = r[f"{c}_lo"], r[f"{c}_hi"]
            return f"{r[c]:.2f}x [{lo:.2f}-{hi:.2f}]" + ("~" if lo <= 1 <= hi else "")
        return fmt(r.get(c))
    table = [[cell(r, c) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))


def save_rows(rows: list[dict], env: dict, device: str, out: Path) -> None:
    """Ratios, environment, then CSV and JSON (atomic); called after every arch, so an
    interrupted run keeps what it measured."""
    from quant.fileio import atomic_write_json, atomic_write_text

    add_ratios(rows, device)
    for r in rows:
        r.update(env)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench_kernels_{device}"
    atomic_write_json(stem.with_suffix(".json"), rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(stem.with_suffix(".csv"), buf.getvalue())


def environment(device: str, threads: int) -> dict:
    env = {"torch": torch.__version__, "device": device, "threads": threads, "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    try:
        env["loadavg"] = os.getloadavg()
    except OSError:
        pass
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--archs", nargs="+", default=None,
                   help="open_clip architectures (default: ViT-B-32 on cpu; ViT-B-32 ViT-B-16 ViT-L-14 on cuda)")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--variants", nargs="+", default=None,
                   help="default: fp32, bf16|fp16, q-all-a16, q-all-a16-int8mem, q-all-a16-2bit, q-all-a8 "
                        "(cuda: also q-all-a8-2bit, q-all-a8-unfused; cpu: also q-all-a8-quads, q-all-a8-onednn, "
                        "q-all-a8-pairs, q-all-a8-fbgemm); "
                        "on request: q-all-a8-portable (cpu), q-all-a8-unfused (cpu: the same model)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None, help="interleaved timing rounds (torch.utils.benchmark)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--threshold", type=float, default=1.0,
                   help="absmean threshold of the ternary weights: 1 (the q-all preset, ~31%% zeros on random "
                        "weights) or 2 (the TernaryCLIP authors' code, ~58%% zeros); the sparse kernels get faster")
    p.add_argument("--no-layers", action="store_true", help="skip the per-layer shapes")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end models")
    p.add_argument("--modes", nargs="+", default=None, choices=["eager", "graph"],
                   help="CUDA: eager calls and/or CUDA-graph replays (default both; CPU: eager)")
    p.add_argument("--quick", action="store_true", help="fewer repeats; ViT-B-32 only unless --archs")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out"), help="folder for the CSV and JSON rows")
    args = p.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message="No pretrained weights")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device == "cuda"
    archs = args.archs or (["ViT-B-32"] if args.quick or not gpu else ["ViT-B-32", "ViT-B-16", "ViT-L-14"])
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    repeats = args.repeats if args.repeats is not None else ((10 if args.quick else 30) if gpu else (3 if args.quick else 5))
    modes = args.modes or (["eager", "graph"] if gpu else ["eager"])
    half_name = HALF[args.device][0]
    names = args.variants or ["fp32", half_name, "q-all-a16", "q-all-a16-int8mem", "q-all-a16-2bit", "q-all-a8"]
    if not args.variants and args.device == "cuda":  # the 2-bit Triton GEMM (on the CPU: unpack per call)
        names += ["q-all-a8-2bit", "q-all-a8-unfused"]  # and what the fused LayerNorms / GELUs gain
    if not args.variants and args.device == "cpu":  # the CPU's W1.58A8 kernels side by side
        names += CPU_OTHER_A8

    from bench.embedded import register

    register()  # the embedded ternbench-tiny too, for smoke runs
    env = environment(args.device, torch.get_num_threads())
    env["threshold"] = args.threshold
    print(f"# {json.dumps(env)}", flush=True)
    rows: list[dict] = []
    for arch in archs:
        if not args.no_layers:
            bench_layers(arch, args.device, args.batches, warmup, repeats, rows, modes, args.threshold, names)
            save_rows(rows, env, args.device, Path(args.out))
        if not args.no_e2e:
            variants = build_variants(arch, args.device, names, args.threshold)
            bench_e2e(arch, args.device, variants, args.batches, warmup, repeats, rows, modes,
                      save=partial(save_rows, rows, env, args.device, Path(args.out)))
            save_rows(rows, env, args.device, Path(args.out))
            del variants
            if gpu:
                torch.cuda.empty_cache()
    save_rows(rows, env, args.device, Path(args.out))
    print_table(rows, args.device)
    print("# speed-ups: paired over interleaved rounds, [95% interval], ~ = not significant")
    print(f"# wrote {Path(args.out) / f'bench_kernels_{args.device}'}.csv and .json ({len(rows)} rows)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
