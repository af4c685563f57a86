"""The ``ternbench report`` and ``ternbench check`` sub-commands (argument parsing and exit codes only).

``report``: render a results directory as html (default), md or csv.
``check``: exit 0 when no threshold is violated, 1 when one is (with a table of violations),
2 on unusable or incomparable input (the CLI's user-error path, with the reason).
"""

from __future__ import annotations

import argparse
import sys


def add_report_parser(sub) -> None:
    from reports import FORMATS

    p = sub.add_parser("report", help="render the HTML leaderboard (or md / csv) of a results directory",
                       description="Render a results directory as a self-contained HTML leaderboard, "
                                   "or as Markdown / CSV tables.")
    p.add_argument("results", metavar="RESULTS", help="results directory written by `ternbench run`")
    p.add_argument("--out", "-o", metavar="FILE",
                   help="output file (default: RESULTS/report.FORMAT; RESULTS/benchmark.csv for clip_benchmark)")
    p.add_argument("--format", "-f", default="html", choices=FORMATS, help="output format (default: html)")
    p.set_defaults(func=_report)


def add_check_parser(sub) -> None:
    c = sub.add_parser("check", help="regression gate for CI: compare results with a baseline",
                       description="Compare RESULTS with BASELINE (a results directory or an expected-figures "
                                   "JSON). Exit 0: no violation; 1: violations (listed); 2: unusable or "
                                   "incomparable input.")
    c.add_argument("results", metavar="RESULTS", help="results directory to check")
    c.add_argument("--baseline", "-b", metavar="BASELINE",
                   help="baseline results directory or expected-figures JSON (required unless --write-expected)")
    c.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="largest allowed accuracy drop in points, per dataset and on the average")
    c.add_argument("--max-latency-regression", type=float, metavar="PCT",
                   help="largest allowed latency increase in percent (batch 1 and throughput batch)")
    c.add_argument("--min-compression", type=float, metavar="X",
                   help="smallest allowed compression of ternary variants (times, see --compression-vs)")
    c.add_argument("--compression-vs", choices=("fp32", "fp16"), default="fp32",
                   help="which compression ratio --min-compression reads (default: fp32)")
    c.add_argument("--thresholds", metavar="YAML", help="per-model / group / dataset thresholds (see docs)")
    c.add_argument("--significant-only", action="store_true",
                   help="count an accuracy drop only when it is larger than noise (binomial z-test, 5%%)")
    c.add_argument("--ignore-device", action="store_true",
                   help="compare runs made on different devices (accuracy only; latency is not checked)")
    c.add_argument("--junit", metavar="FILE", help="also write the checks as JUnit XML")
    c.add_argument("--write-expected", metavar="FILE",
                   help="write RESULTS' figures as an expected-figures JSON (a portable baseline) and exit")
    c.set_defaults(func=_check)


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from quant.fileio import check_output_path
    from reports import render_report
    from reports.render import DEFAULT_NAMES

    out = Path(args.out) if args.out else Path(args.results) / DEFAULT_NAMES[args.format]
    check_output_path(out, "--out" if args.out else "report")
    path = render_report(args.results, out, args.format)
    print(f"wrote {args.format} report of {args.results} to {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from quant.fileio import check_output_path
    from reports import baseline as B
    from reports.check import CheckOptions, format_violations, run_check
    from reports.errors import IncomparableError, ThresholdConfigError
    from reports.junit import write_junit, write_junit_error
    from reports.thresholds import ThresholdFile, Thresholds, load_threshold_file

    # Output files are checked before any result is read: a bad path fails now, not after the work.
    for option, path in (("--junit", args.junit), ("--write-expected", args.write_expected)):
        if path:
            check_output_path(path, option)
    if args.write_expected:
        path = B.write_expected(B.from_results(args.results), args.write_expected)
        print(f"wrote the expected figures of {args.results} to {path}")
        return 0
    if not args.baseline:
        raise ThresholdConfigError("check needs --baseline BASELINE (a results directory or expected-figures JSON)")
    try:
        cli = Thresholds(args.max_drop, args.max_latency_regression, args.min_compression)
    except ThresholdConfigError as e:
        raise ThresholdConfigError(f"command line: {e}") from None
    tfile = load_threshold_file(args.thresholds) if args.thresholds else ThresholdFile()
    opts = CheckOptions(cli, tfile, args.significant_only, args.ignore_device, f"compression_vs_{args.compression_vs}")
    res, base = B.load_side(args.results, "RESULTS"), B.load_side(args.baseline)
    try:
        report = run_check(res, base, opts)
    except IncomparableError as e:
        if args.junit:
            write_junit_error(str(e), args.junit)
        raise
    if not report.results:
        print("warning: no threshold given (--max-drop, --max-latency-regression, --min-compression or "
              "--thresholds): nothing was checked", file=sys.stderr)
    print(format_violations(report))
    if args.junit:
        print(f"wrote JUnit XML to {write_junit(report, args.junit)}")
    return 1 if report.violations else 0
