"""Does QAT with distillation recover what post-training ternarization loses? (issue 5's benchmark)

Trains (or loads from the repo's shipped files or the cache) the embedded teacher ``ternbench-tiny:mini`` and its QAT+KD
students, then scores fp32 / PTQ q-ffn / PTQ q-all / QAT+KD q-ffn / QAT+KD q-all on every mini
test set with clip_benchmark's metrics, and prints one row per model (main metric per dataset,
their mean, the drop against fp32, and the wall times), plus a JSON line per row.

    OMP_NUM_THREADS=2 python benchmarks/bench_qat_mini.py            # the shipped models
    OMP_NUM_THREADS=2 python benchmarks/bench_qat_mini.py --retrain  # train them (cache) and score
    python benchmarks/bench_qat_mini.py --quiet --out benchmarks/results/bench_qat_mini_cuda_h100.jsonl
    python benchmarks/bench_qat_mini.py --teacher steps=300 lr=1e-3 --student steps=100

``--teacher`` / ``--student`` override recipe fields (their cache key changes with them, so an
override trains new models instead of reusing the cached ones). ``TERNBENCH_CACHE`` picks the cache.
Measured rows (H100, default recipe and the teacher recipes tried): results/bench_qat_mini_cuda_h100.jsonl.
"""

from __future__ import annotations

import argparse
import copy
import json
import time


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)  # numbers, true/false, null, lists
        except json.JSONDecodeError:
            out[key] = value  # plain strings: precision=bf16
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", nargs="*", default=[], metavar="KEY=VALUE", help="teacher recipe overrides")
    parser.add_argument("--student", nargs="*", default=[], metavar="KEY=VALUE", help="student recipe overrides")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--retrain", action="store_true", help="ignore the shipped weights (train or use the cache)")
    parser.add_argument("--out", metavar="FILE.jsonl", help="also append the JSON rows to this file")
    args = parser.parse_args(argv)

    import torch

    from bench.datasets.mini import MINI, prepare_mini
    from bench.train import embedded
    from bench.train.evaluate import evaluate_mini, mean_main
    from bench.train.models import load_clip
    from quant import load_packed, preset, quantize_

    embedded.TEACHER_RECIPE.update(_overrides(args.teacher))
    embedded.STUDENT_RECIPE.update(_overrides(args.student))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    root = prepare_mini()
    progress = not args.quiet

    times: dict[str, float] = {}
    t = time.perf_counter()
    shipped = not args.retrain
    teacher_file = embedded.teacher_path(root, device, progress, shipped)
    times["teacher"] = time.perf_counter() - t
    student_files = {}
    for variant in embedded.STUDENTS:
        t = time.perf_counter()
        student_files[variant] = embedded.student_path(variant, root, device, progress, shipped)
        times[variant] = time.perf_counter() - t

    teacher = load_clip(f"{embedded.TEACHER_ARCH}:{teacher_file}", device)
    models = {"fp32": (teacher.model, "")}
    for name in ("q-ffn", "q-all"):
        m = copy.deepcopy(teacher.model)
        quantize_(m, preset(name))
        models[f"PTQ {name}"] = (m, "")
    for variant, path in student_files.items():
        models[f"QAT+KD {variant[4:]}"] = (load_packed(path, device=device), variant)

    rows = []
    for label, (model, variant) in models.items():
        t = time.perf_counter()
        scores = evaluate_mini(model.to(device), teacher.transform, teacher.tokenizer, root, device=device)
        rows.append({"model": label, **{n: scores[n]["value"] for n in MINI}, "mean": mean_main(scores),
                     "eval_s": time.perf_counter() - t, "train_s": times.get(variant or ("teacher" if label == "fp32" else ""))})
    base = rows[0]["mean"]
    header = f"{'model':<16}" + "".join(f"{n:>10}" for n in (*MINI, "mean", "vs fp32", "train s", "eval s"))
    print(header)
    for r in rows:
        train_s = "" if r["train_s"] is None else f"{r['train_s']:.0f}"
        print(f"{r['model']:<16}" + "".join(f"{100 * r[n]:>10.1f}" for n in (*MINI, "mean"))
              + f"{100 * (r['mean'] - base):>+10.1f}{train_s:>10}{r['eval_s']:>10.1f}")
    lines = [json.dumps({**r, "drop_points": 100 * (base - r["mean"]), "device": device,
                         "threads": torch.get_num_threads(), "teacher": args.teacher, "student": args.student},
                        sort_keys=True) for r in rows]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
