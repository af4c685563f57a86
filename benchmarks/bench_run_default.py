"""Wall time of the default `ternbench run` (no arguments): a benchmark, not a test.

Runs the bare ``ternbench`` command in a fresh working directory, offline (``HF_HUB_OFFLINE=1``),
as a user would on a fresh clone, then runs it again to time the resume path (every cell
already done: nothing may be recomputed). By default the cache is fresh too, so the first run
includes generating the mini suite (the embedded models come from the repo's shipped weights; a
changed training recipe would train them first, about 20 minutes on 2 cores); ``--cache DIR`` reuses a warm cache
instead, and ``--random-weights`` runs the same grid with the untrained tiny model (the sweep
itself, no training). Prints one JSON row per run and a short table.

    OMP_NUM_THREADS=2 python benchmarks/bench_run_default.py
    python benchmarks/bench_run_default.py --random-weights --out bench_run_default.json
    python benchmarks/bench_run_default.py --cache ~/.cache/ternbench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run(cwd: Path, env: dict[str, str], label: str, argv: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    from bench import results

    df = results.load(cwd / "results", strict=False) if (cwd / "results").is_dir() else None
    return {
        "run": label,
        "command": " ".join(["ternbench", *argv]),
        "wall_s": round(wall, 2),
        "exit_code": proc.returncode,
        "cells_computed": len(lines),
        "cells_total": 0 if df is None else len(df),
        "cells_ok": 0 if df is None else int((df.status == "ok").sum()),
        "summary": next((line for line in proc.stdout.splitlines() if "cells ok" in line), ""),
        "stderr_tail": proc.stderr.strip().splitlines()[-1:] if proc.returncode not in (0, 1) else [],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", help="TERNBENCH_CACHE to use (default: a fresh temporary one)")
    ap.add_argument("--out", help="also write the rows as JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary working directory")
    ap.add_argument("--random-weights", action="store_true",
                    help="the default grid with the untrained tiny model (times the sweep, not the training)")
    args = ap.parse_args()
    argv: list[str] = []
    if args.random_weights:
        from bench import defaults

        argv = ["run", "--models", *(f"{defaults.EMBEDDED_ARCH}@{v}" for v in defaults.VARIANTS)]

    work = Path(tempfile.mkdtemp(prefix="ternbench-default-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TERNBENCH_CACHE": args.cache or str(work / "cache"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows = [_run(work, env, "first (fresh results/)", argv), _run(work, env, "rerun (resume, all done)", argv)]
    import torch

    meta = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cache": env["TERNBENCH_CACHE"],
            "fresh_cache": args.cache is None, "workdir": str(work)}
    for row in rows:
        print(json.dumps({**row, **meta}))
    print(f"\n{'run':<28} {'wall s':>8} {'exit':>5} {'computed':>9} {'ok/total':>9}")
    for r in rows:
        print(f"{r['run']:<28} {r['wall_s']:>8.1f} {r['exit_code']:>5} {r['cells_computed']:>9} "
              f"{r['cells_ok']:>4}/{r['cells_total']:<4}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "meta": meta}, indent=2) + "\n")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if rows[0]["exit_code"] == 0 and rows[1]["cells_computed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
