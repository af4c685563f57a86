"""``ternbench kernels``: which ternary kernel runs here for each backend, (``--check``) whether each
one computes what the reference does on this machine, and (``--bench``) how fast each one is here."""

from __future__ import annotations

import json
import sys

from quant.errors import QuantConfigError


def add_parser(subparsers) -> None:
    k = subparsers.add_parser(
        "kernels", help="which ternary kernels run on this machine (--check: against the reference; --bench: "
                        "their speed here)",
        description="Print the kernel each backend picks here for W1.58A8 (int8) and W1.58A16 (float) "
                    "activations, why the others were passed over, and the native CPU libraries (built now "
                    "into the cache if they were not: run it once in an image build to ship them). "
                    "--check runs every usable kernel against the slow reference on random shapes "
                    "and exits 1 if one is wrong; --bench times them beside fp32 and names the fastest.")
    k.add_argument("--check", action="store_true",
                   help="check every usable kernel against the reference (a second or so on a CPU)")
    k.add_argument("--bench", action="store_true",
                   help="time every usable W1.58A8 kernel against fp32 (and fp16 on CUDA) at CLIP's layer "
                        "shapes and name the fastest here (about 10 s on 2 CPU cores)")
    k.add_argument("--repeats", type=int, default=5,
                   help="interleaved timing rounds per shape for --bench (torch.utils.benchmark; default: 5)")
    k.add_argument("--json", action="store_true", help="print everything as JSON")
    k.set_defaults(func=run_kernels)


def _machine_line(m: dict) -> str:
    cuda = m["cuda"] or "none"
    return (f"this machine: {m['machine']}, torch {m['torch']}, CPU capability {m['cpu_capability']}, "
            f"int8 dot product: {m['int8_dot'] or 'none'}, {m['threads']} threads, "
            f"FBGEMM {'yes' if m['fbgemm'] else 'no'}, oneDNN {'yes' if m['onednn'] else 'no'}; CUDA: {cuda}; "
            f"Triton: {m['triton'] or 'not installed'}")


def _library_line(name: str, info: dict) -> str:
    if "unavailable" in info:
        return f"  {name:20s} unavailable: {info['unavailable']}"
    return f"  {name:20s} {info['form']} form, {info['threads']}, {info['library']}"


def _table(rows: list[dict]) -> list[str]:
    lines = [f"{'device':7s} {'backend':19s} {'activations':12s} {'kernel':20s} {'fuses':6s} passed over"]
    for r in rows:
        kernel = r["kernel"] or "reference (slow)"
        fuses = "yes" if r["fuses"] else "-"
        lines.append(f"{r['device']:7s} {r['backend']:19s} {r['activations']:12s} {kernel:20s} {fuses:6s} "
                     + "; ".join(r["passed_over"]))
    return lines


def run_kernels(args) -> int:
    from quant.kernels.inventory import check_all, kernel_table, machine, native_libraries

    info = {"machine": machine(), "native": native_libraries()}
    rows = kernel_table()
    checks = check_all(rows) if args.check else None
    failed = [c for c in checks or () if not c["ok"]]
    timings = None
    if args.bench:
        from bench.kernel_timing import time_kernels

        if args.repeats < 1:
            raise QuantConfigError(f"--repeats must be at least 1, got {args.repeats}")
        from bench.isolation import host_lock

        devices = ["cpu"] + (["cuda"] if info["machine"]["cuda"] else [])
        with host_lock(lambda s: print(s, file=sys.stderr)):  # never beside another ternbench run's work
            timings = [time_kernels(rows, device, args.repeats) for device in devices]
    if args.json:
        print(json.dumps({**info, "kernels": [{k: v for k, v in r.items() if k != "_cls"} for r in rows],
                          "checks": checks, "timings": timings}, indent=2))
        return 1 if failed else 0
    print(_machine_line(info["machine"]))
    print("\nnative CPU kernels (C, built with the system compiler on first use, cached):")
    for name, lib in info["native"].items():
        print(_library_line(name, lib))
    print("\nkernel picked per backend (`accelerate_(model, backend=...)`; fuses: takes the blocks' "
          "LayerNorms and GELUs):")
    shown = rows if info["machine"]["cuda"] else [r for r in rows if r["device"] != "cuda"]
    print("\n".join(_table(shown)))
    if not info["machine"]["cuda"]:
        print("cuda    (no CUDA device: the CUDA kernels cuda-triton and cuda-2bit are not available here)")
    if checks is not None:
        print("\ncheck against the reference (exact integers; worst error as a share of the rounding tolerance):")
        for c in checks:
            status = "ok" if c["ok"] else "FAILED"
            print(f"  {c['kernel']:20s} {c['device']:5s} {c['activations']:6s} {c['dtype']:8s} {status:7s} "
                  f"worst {c['worst']:.2%} ({c['detail']})")
        print(f"{len(checks) - len(failed)} of {len(checks)} kernels ok"
              + (f"; FAILED: {', '.join(c['kernel'] for c in failed)}" if failed else ""))
    for t in timings or ():
        print("\n".join(_timing_lines(t)))
    return 1 if failed else 0


def _ratio(v: float, lo: float, hi: float) -> str:
    return f"{v:.2f}x [{lo:.2f}-{hi:.2f}]" + ("" if not lo <= 1 <= hi else "~")


def _timing_lines(t: dict) -> list[str]:
    names = list(t["ms"])
    lines = [f"\nspeed on {t['device']} (median ms; {t['baseline']}'s time / this one's, paired over {t['rounds']} interleaved "
             "rounds, [95% interval], ~ = not significant):",
             f"  {'M x K x N':16s}" + "".join(f"{n:>34s}" for n in names)]
    for i, shape in enumerate(t["shapes"]):
        cells = [f"{t['ms'][n][i]:9.3f} {'baseline' if n == t['baseline'] else _ratio(*t['ratios'][n][i])}"
                 for n in names]
        lines.append(f"  {shape:16s}" + "".join(f"{c:>34s}" for c in cells))
    lines.append(f"  {'geometric mean':16s}" + "".join(
        f"{'baseline' if n == t['baseline'] else _ratio(t['speedup'][n], *t['interval'][n]):>34s}" for n in names))
    if t["fastest"]:
        f = t["fastest"]
        verdict = f"fastest W1.58A8 kernel here: {f} ({_ratio(t['speedup'][f], *t['interval'][f])} {t['baseline']})"
        if t["auto"] and t["fastest"] != t["auto"]:
            backend = t["backends"].get(t["fastest"], t["fastest"])
            a = t["auto"]
            verdict += (f"; `auto` picks {a} ({_ratio(t['speedup'][a], *t['interval'][a])}): "
                        f"accelerate_(model, backend={backend!r}) is faster on this machine")
        lines.append("  " + verdict)
    return lines
