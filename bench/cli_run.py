"""The ``ternbench run`` sub-command: argument parsing, the default grid, the closing summary.

All the work is in `bench.runner`; this module turns arguments into a `SweepConfig`, prints
where the results went and what to run next, renders the report (unless ``--no-report``) and
chooses the exit code (``EXIT_CODES``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_CELLS_FAILED, EXIT_BAD_INPUT, EXIT_REPORT_FAILED = 0, 1, 2, 3
EXIT_CODES = {
    EXIT_OK: "every cell ok and the report written",
    EXIT_CELLS_FAILED: "some cell failed (its error is in its result file; every other cell is kept)",
    EXIT_BAD_INPUT: "bad input, found before any work started",
    EXIT_REPORT_FAILED: "the report could not be written (the results are intact; `ternbench report` retries)",
}
REPORT_NAME = "report.html"


def default_report_path(out: str | Path) -> Path:
    """The report of a results directory lives inside it, so two --out folders never share one."""
    return Path(out).expanduser() / REPORT_NAME


def add_parser(sub) -> None:
    from bench import defaults  # constants only: --help stays fast

    datasets = " ".join(defaults.DATASETS)
    p = sub.add_parser(
        "run", help="sweep models x datasets x tasks into a results directory (resumable)",
        description="Evaluate models on datasets (zero-shot classification / retrieval with clip_benchmark's "
                    "metrics) and measure their efficiency. One JSON per cell in --out; rerunning resumes. "
                    f"With no arguments: {defaults.models_help()} on the embedded {datasets} suite (offline).")
    p.add_argument("--models", "-m", nargs="+", metavar="SPEC",
                   help="model specs: ARCH[:PRETRAINED][@VARIANT], hf-hub:ORG/REPO[@VARIANT], or a packed "
                        "checkpoint file (default: the embedded model, see above)")
    p.add_argument("--datasets", "-d", nargs="+", metavar="NAME",
                   help="dataset names or suites from datasets.yaml, e.g. mini, clip41, vtab, wds/vtab/cifar10 "
                        f"(default: {datasets})")
    p.add_argument("--tasks", "-t", nargs="+", default=["auto"], metavar="TASK",
                   help="auto (each dataset's own task + efficiency once per model), zeroshot_classification, "
                        "zeroshot_retrieval, efficiency (default: auto)")
    p.add_argument("--out", "-o", default=defaults.OUT, metavar="DIR",
                   help=f"results directory (default: {defaults.OUT}/)")
    p.add_argument("--data-root", metavar="DIR",
                   help="folder holding datasets in clip_benchmark's webdataset layout (wds_<name>/)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="where shards streamed from Hugging Face are cached (default: the ternbench cache)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="evaluation batch size (default: 64)")
    p.add_argument("--num-workers", type=int, default=0, metavar="N", help="data loader workers (default: 0)")
    p.add_argument("--overwrite", default="missing", metavar="WHEN",
                   help="missing: compute cells without a result or whose last attempt failed (resume, default); "
                        "always: recompute every cell; never: leave every existing result file alone")
    p.add_argument("--shard", default="1/1", metavar="I/N",
                   help="run only part I of N of the cell list (1-based), e.g. $((SLURM_ARRAY_TASK_ID+1))/4")
    p.add_argument("--seed", type=int, default=0, help="torch seed set before each model and cell (default: 0)")
    g = p.add_argument_group("efficiency")
    g.add_argument("--throughput-batch", type=int, default=32, metavar="N",
                   help="batch size of the throughput measurement (default: 32)")
    g.add_argument("--warmup", type=int, default=1, metavar="N",
                   help="untimed calls of each function before timing (default: 1)")
    g.add_argument("--repeats", type=int, default=12, metavar="N",
                   help="interleaved timing rounds (speed baseline, model) per latency in each worker process; "
                        "each round is one torch.utils.benchmark blocked_autorange per model (default: 12)")
    g.add_argument("--processes", type=int, default=4, metavar="N",
                   help="fresh worker processes each efficiency cell is measured in, one after the other; their "
                        "rounds are pooled, so intervals cover the process-to-process variation too (default: 4)")
    g.add_argument("--min-run-time", type=float, default=0.05, metavar="S",
                   help="seconds of calls per model and round (blocked_autorange's min_run_time; default: 0.05)")
    g.add_argument("--time-budget", type=float, default=20.0, metavar="S",
                   help="per latency and cell: rounds after the first 3 start only while it has taken less than S "
                        "seconds (slow models get fewer rounds), shared out among the --processes; 0: always "
                        "--repeats rounds (default: 20)")
    g.add_argument("--settle", type=float, default=0.5, metavar="S",
                   help="before each timed round, wait at most S seconds for the threads the other model left "
                        "spinning (OpenMP, onnxruntime) to go idle, so they do not run into it; the round starts "
                        "as soon as they are (default: 0.5)")
    g.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch threads of the measurement (default 0: torch's default here; recorded)")
    g.add_argument("--speed-baseline", default="auto", metavar="VARIANT",
                   help="variant speed-ups are paired against, built from each model's architecture and weights: "
                        "auto (fp16 on CUDA; fp32 on a CPU, or bf16 where the CPU runs it faster), a variant "
                        "name (e.g. fp32, bf16), or none (default: auto)")
    g.add_argument("--worker-timeout", type=float, default=3600.0, metavar="S",
                   help="an efficiency measurement still running after S seconds is stopped and its cell fails "
                        "(default: 3600)")
    g.add_argument("--no-cuda-graphs", action="store_true",
                   help="on CUDA, time eager calls instead of replays of a captured CUDA graph (the default; "
                        "no Python or launch overhead, what a deployment with graphs sees)")
    r = p.add_argument_group("report")
    r.add_argument("--no-report", action="store_true", help="do not render the HTML report at the end")
    r.add_argument("--report-out", metavar="FILE", help=f"where the report goes (default: DIR/{REPORT_NAME})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (one summary line per cell only)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate everything and list this shard's cells (done / to run) without running them")
    p.epilog = "exit status: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items())
    p.set_defaults(func=_run)


def _config(args: argparse.Namespace):
    from bench import defaults
    from bench.runner import Shard, SweepConfig
    from bench.tasks.efficiency import EfficiencyConfig

    notes = []
    models, datasets = args.models, args.datasets
    if not models:
        grid = defaults.default_grid(args.device)
        models = grid.models
        notes.append(grid.note)
    if not datasets and not (set(args.tasks) == {"efficiency"}):
        datasets = defaults.DATASETS
    cfg = SweepConfig(
        models=tuple(models), datasets=tuple(datasets or ()), tasks=tuple(args.tasks), out=args.out,
        data_root=args.data_root, cache_dir=args.cache_dir, device=args.device, batch_size=args.batch_size,
        num_workers=args.num_workers, overwrite=args.overwrite, shard=Shard.parse(args.shard), seed=args.seed,
        efficiency=EfficiencyConfig(batch=args.throughput_batch, warmup=args.warmup, repeats=args.repeats,
                                    processes=args.processes,
                                    min_run_time_s=args.min_run_time, time_budget_s=args.time_budget,
                                    settle_s=args.settle, threads=args.threads, cuda_graphs=not args.no_cuda_graphs,
                                    speed_baseline=args.speed_baseline, timeout_s=args.worker_timeout),
        progress=not args.no_progress, command=args.invocation,
    )
    return cfg, notes


def _report_data(out: Path):
    """The numbers of the report (and of the accuracy summary), or None when they cannot be computed."""
    from reports.render import report_data

    try:
        return report_data(out)
    except Exception as e:  # the sweep's results are safe on disk; a report problem must not hide them
        print(f"ternbench run: error: could not read the results back for the summary and the report "
              f"({type(e).__name__}: {e}); the results in {out}/ are intact", file=sys.stderr)
        return None


def _render_report(out: Path, path: Path, data) -> Path | None:
    from reports import render_report

    try:
        return render_report(data if data is not None else out, path, "html")
    except Exception as e:  # the sweep's results are safe on disk; a report problem must not hide them
        print(f"ternbench run: error: could not write the report {path} ({type(e).__name__}: {e}); "
              f"the results in {out}/ are intact: run `ternbench report {out} --out FILE` to retry",
              file=sys.stderr)
        return None


def _dry_run(p) -> int:
    from bench import results
    from bench.runner import will_run

    todo = 0
    for cell in p.cells:
        path = cell.path(p.out)
        run = will_run(cell, p.config.overwrite, p.out)
        todo += run
        changed = (results.changed_settings(path, cell.settings)
                   if run and cell.settings and results.is_done(path) == "ok" else [])
        why = f"  (measured with other settings: {'; '.join(changed)})" if changed else ""
        print(f"{'run ' if run else 'done'}  {cell.label()}  -> {path}{why}")
    shard = f", shard {p.config.shard}" if p.config.shard.count > 1 else ""
    print(f"{len(p.cells)} cells ({p.n_all_cells} in the whole sweep{shard}); {todo} would run "
          f"with --overwrite {p.config.overwrite}; nothing was run (--dry-run)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from bench import defaults
    from bench.efficiency_table import efficiency_rows, format_table
    from bench.runner import plan, run_sweep
    from quant.fileio import check_output_path

    cfg, notes = _config(args)
    report_path = None
    if not args.no_report:  # checked before plan() creates the results directory: a refusal leaves no trace
        report_path = Path(args.report_out).expanduser() if args.report_out else default_report_path(cfg.out)
        check_output_path(report_path, "--report-out" if args.report_out else "report",
                          hint="choose another with --report-out FILE, or --no-report")
    p = plan(cfg)  # every bad input is reported here, before any work
    if args.dry_run:
        for note in notes:
            print(note)
        return _dry_run(p)
    summary = run_sweep(p, to_train=defaults.to_train(p.specs.values()), notes=notes)
    table = format_table(efficiency_rows(c.path(p.out) for c in p.cells if c.dataset is None), p.device)
    if table:
        print("\n" + table)
    n_ok = summary.n_shard_cells - len(summary.failed)
    elsewhere = f", {len(summary.elsewhere)} left to another run computing them" if summary.elsewhere else ""
    print(f"\n{n_ok} of {summary.n_shard_cells} cells ok ({summary.ran} computed now, {summary.skipped} kept"
          f"{elsewhere}); results in {summary.out}/")
    if summary.failed:
        print(f"{len(summary.failed)} cells failed (their errors are in the result files):")
        for cid in summary.failed[:10]:
            print(f"  {cid}")
        if len(summary.failed) > 10:
            print(f"  ... and {len(summary.failed) - 10} more")
    if summary.random_weights:
        print("note: random weights (no trained checkpoint): " + ", ".join(summary.random_weights))
    data = _report_data(summary.out)
    if data is not None and not data.leaderboard.table.empty:
        from reports.summary import format_summary

        print("\n" + format_summary(data.leaderboard))
    report = None if report_path is None else _render_report(summary.out, report_path, data)
    if report is not None:
        print(f"report: {report}")
    print(f"next: ternbench report {summary.out} --format md   (tables), or load it in Python: "
          f"bench.results.load({str(summary.out)!r})")
    if report_path is not None and report is None:
        return EXIT_REPORT_FAILED
    return EXIT_CELLS_FAILED if summary.failed else EXIT_OK
