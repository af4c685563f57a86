"""``ternbench kernels``: which ternary kernel runs here for each backend, and (``--check``) whether
each one computes what the reference does on this machine."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    k = subparsers.add_parser(
        "kernels", help="which ternary kernels run on this machine (and --check them against the reference)",
        description="Print the kernel each backend picks here for W1.58A8 (int8) and W1.58A16 (float) "
                    "activations, why the others were passed over, and the native CPU libraries (built now "
                    "into the cache if they were not: run it once in an image build to ship them). "
                    "--check runs every usable kernel against the slow reference on random shapes "
                    "and exits 1 if one is wrong.")
    k.add_argument("--check", action="store_true",
                   help="check every usable kernel against the reference (a second or so on a CPU)")
    k.add_argument("--json", action="store_true", help="print everything as JSON")
    k.set_defaults(func=run_kernels)


def _machine_line(m: dict) -> str:
    cuda = m["cuda"] or "none"
    return (f"this machine: {m['machine']}, torch {m['torch']}, CPU capability {m['cpu_capability']}, "
            f"{m['threads']} threads, FBGEMM {'yes' if m['fbgemm'] else 'no'}; CUDA: {cuda}; "
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
    if args.json:
        print(json.dumps({**info, "kernels": [{k: v for k, v in r.items() if k != "_cls"} for r in rows],
                          "checks": checks}, indent=2))
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
    return 1 if failed else 0
