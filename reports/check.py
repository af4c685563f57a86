"""``ternbench check``: compare a results directory with a baseline and list every regression.

Owns the comparison: first that the two sides are comparable at all (same models, same
datasets with the same sample counts, same devices, usable baseline cells; otherwise an
``IncomparableError`` saying precisely what differs -> exit 2), then every check:
accuracy drop per dataset and on the average (points, ``max_drop``), latency regression
(percent, ``max_latency_regression``; counted only when the increase is beyond both runs'
recorded spread, see ``stats.latency_regression_significant``, and, for a model paired with a
speed baseline in the same process, only when that paired speed-up fell too: a speed-up that held
means the whole machine was slower), compression of ternary variants (``min_compression``),
and failed cells. ``significant_only`` ignores drops within noise (binomial z-test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from reports import stats
from reports.baseline import Side
from reports.errors import IncomparableError
from reports.thresholds import ThresholdFile, Thresholds

LATENCY_METRICS: tuple[str, ...] = (
    "image_latency_b1_ms", "image_latency_bN_ms", "text_latency_b1_ms", "text_latency_bN_ms",
)
COMPRESSION_METRICS: tuple[str, ...] = ("compression_vs_fp32", "compression_vs_fp16")
_EPS = 1e-9  # float noise: a drop of exactly the threshold passes
NOISE_NOTE = "within both runs' spread: not counted"
DRIFT_NOTE = "the machine was slower, not this model: its speed-up over its baseline held; not counted"


@dataclass(frozen=True)
class CheckOptions:
    thresholds: Thresholds = field(default_factory=Thresholds)
    file: ThresholdFile = field(default_factory=ThresholdFile)
    significant_only: bool = False
    ignore_device: bool = False
    compression_metric: str = "compression_vs_fp32"


@dataclass(frozen=True)
class CheckResult:
    """One check performed (a JUnit test case); ``passed`` False is a violation."""

    model_id: str
    target: str  # dataset name, "average", or "efficiency"
    check: str  # "accuracy drop", "latency regression: <metric>", "compression", "failed cell"
    baseline: float | None
    value: float | None
    change: str  # e.g. "-3.20 pts", "+15.0%"
    threshold: str
    passed: bool
    note: str = ""


@dataclass
class CheckReport:
    results: list[CheckResult]
    notes: list[str]

    @property
    def violations(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]


def _names(xs) -> str:
    xs = sorted(xs)
    return ", ".join(xs[:12]) + (f" and {len(xs) - 12} more" if len(xs) > 12 else "")


def check_comparable(res: Side, base: Side, ignore_device: bool) -> list[str]:
    """Raise IncomparableError listing every difference that makes a comparison meaningless."""
    problems: list[str] = []
    notes: list[str] = []
    only_r, only_b = res.models - base.models, base.models - res.models
    if only_r or only_b:
        problems.append("different models: " + "; ".join(
            s for s in (only_r and f"only in RESULTS ({res.name}): {_names(only_r)}",
                        only_b and f"only in BASELINE ({base.name}): {_names(only_b)}") if s))
    for mid in sorted(res.models & base.models):
        rd = set(res.acc.loc[res.acc["model_id"] == mid, "dataset"])
        bd = set(base.acc.loc[base.acc["model_id"] == mid, "dataset"])
        if rd != bd:
            parts = [f"only in RESULTS: {_names(rd - bd)}" if rd - bd else "",
                     f"only in BASELINE: {_names(bd - rd)}" if bd - rd else ""]
            problems.append(f"{mid}: different datasets ({'; '.join(p for p in parts if p)})")
        merged = res.acc[res.acc["model_id"] == mid].merge(
            base.acc[base.acc["model_id"] == mid], on="dataset", suffixes=("", "_b"))
        for r in merged.itertuples():
            if r.status_b != "ok":
                # Nothing to compare against: said, not failed (a regression is a change from the baseline).
                both = "RESULTS and BASELINE" if r.status != "ok" else "BASELINE"
                notes.append(f"{mid}: {r.dataset} failed in {both} ({r.error_b}); not checked")
            elif (math.isfinite(r.n_samples) and math.isfinite(r.n_samples_b)
                  and int(r.n_samples) != int(r.n_samples_b)):
                problems.append(f"{mid}: {r.dataset} has {int(r.n_samples)} samples in RESULTS but "
                                f"{int(r.n_samples_b)} in BASELINE (a different split or subset)")
        rdev, bdev = res.devices.get(mid, ""), base.devices.get(mid, "")
        if rdev and bdev and rdev != bdev:
            if ignore_device:
                notes.append(f"{mid}: devices differ ({rdev!r} vs {bdev!r}); latency not checked (--ignore-device)")
            else:
                problems.append(f"{mid}: different devices: RESULTS ran on {rdev!r}, BASELINE on {bdev!r} "
                                "(latency is not comparable; pass --ignore-device to check accuracy only)")
        rt, bt = res.timing.get(mid, ""), base.timing.get(mid, "")
        if rt and bt and rt != bt:
            notes.append(f"{mid}: latencies timed differently (RESULTS: {rt}; BASELINE: {bt}); latency not checked")
        r_eff, b_eff = mid in res.eff_status, mid in base.eff_status
        if b_eff and not r_eff:
            problems.append(f"{mid}: BASELINE has an efficiency result, RESULTS has none")
    if problems:
        raise IncomparableError(
            f"RESULTS ({res.name}) and BASELINE ({base.name}) are not comparable:\n  - " + "\n  - ".join(problems))
    return notes


def _drop_check(mid, target, b_val, b_se, r_val, r_se, max_drop, significant_only) -> CheckResult:
    drop = (b_val - r_val) * 100.0
    d_se = stats.diff_se(r_se, b_se) * 100.0
    sig = stats.is_significant(-drop, d_se)
    over = drop > max_drop + _EPS
    note = ""
    if over and significant_only:
        if sig is True:
            note = "larger than noise"
        elif sig is False:
            note = f"within noise (standard error {d_se:.2f} pts): not counted (--significant-only)"
        elif sig is None:
            note = "significance untested (no sample count or not a proportion): counted"
    elif over and sig is not None:
        note = "larger than noise" if sig else f"within noise (standard error {d_se:.2f} pts)"
    passed = not over or (significant_only and sig is False)
    return CheckResult(mid, target, "accuracy drop", b_val, r_val, f"{-drop:+.2f} pts",
                       f"max drop {max_drop:g} pts", passed, note)


def run_check(res: Side, base: Side, opts: CheckOptions) -> CheckReport:
    notes = check_comparable(res, base, opts.ignore_device)
    opts.file.check_names(set(res.acc["dataset"]), {g for g in res.acc["group"] if isinstance(g, str) and g},
                          res.models)
    out: list[CheckResult] = []
    for mid in sorted(res.models):
        model_th = opts.file.for_model(opts.thresholds, mid)
        merged = res.acc[res.acc["model_id"] == mid].merge(
            base.acc[base.acc["model_id"] == mid], on="dataset", suffixes=("", "_b"))
        pairs = []
        for r in merged.itertuples():
            if r.status_b != "ok":
                continue  # no baseline figure (noted by check_comparable)
            if r.status != "ok":
                out.append(CheckResult(mid, r.dataset, "failed cell", r.value_b, None, "failed", "must succeed",
                                       False, r.error if isinstance(r.error, str) else ""))
                continue
            r_se = stats.binomial_se(r.value, r.n_samples, str(r.main_metric))
            b_se = stats.binomial_se(r.value_b, r.n_samples_b, str(r.main_metric_b or r.main_metric))
            pairs.append((r.value, r_se, r.value_b, b_se))
            th = opts.file.for_cell(opts.thresholds, mid, r.dataset, r.group if isinstance(r.group, str) else None)
            if th.max_drop is not None:
                out.append(_drop_check(mid, r.dataset, r.value_b, b_se, r.value, r_se, th.max_drop,
                                       opts.significant_only))
        if pairs and model_th.max_drop is not None:
            r_avg = sum(p[0] for p in pairs) / len(pairs)
            b_avg = sum(p[2] for p in pairs) / len(pairs)
            c = _drop_check(mid, "average", b_avg, stats.mean_se(p[3] for p in pairs), r_avg,
                            stats.mean_se(p[1] for p in pairs), model_th.max_drop, opts.significant_only)
            failed = len(merged) - len(pairs)
            extra = f"over {len(pairs)} datasets" + (f" ({failed} failed, left out)" if failed else "")
            out.append(replace(c, note="; ".join(x for x in (extra, c.note) if x)))
        out += _efficiency_checks(res, base, mid, model_th, opts, notes)
    return CheckReport(out, notes)


def _efficiency_checks(res: Side, base: Side, mid: str, th: Thresholds, opts: CheckOptions,
                       notes: list[str]) -> list[CheckResult]:
    out: list[CheckResult] = []
    status, error = res.eff_status.get(mid, ("", ""))
    if status == "error":
        return [CheckResult(mid, "efficiency", "failed cell", None, None, "failed", "must succeed", False, error)]
    if mid not in res.eff.index:
        return out
    r_eff = res.eff.loc[mid]
    devices_differ = res.devices.get(mid) and base.devices.get(mid) and res.devices[mid] != base.devices[mid]
    timing_differs = res.timing.get(mid) and base.timing.get(mid) and res.timing[mid] != base.timing[mid]
    if (th.max_latency_regression is not None and mid in base.eff.index and not devices_differ
            and not timing_differs):
        b_eff = base.eff.loc[mid]
        for metric in LATENCY_METRICS:
            r_v, b_v = r_eff.get(metric, math.nan), b_eff.get(metric, math.nan)
            if not (math.isfinite(r_v) and math.isfinite(b_v)) or b_v <= 0:
                continue
            pct = (r_v / b_v - 1.0) * 100.0
            over = pct > th.max_latency_regression + _EPS
            r_iqr, b_iqr = r_eff.get(f"{metric}_iqr", math.nan), b_eff.get(f"{metric}_iqr", math.nan)
            sig = stats.latency_regression_significant(r_v, r_iqr, b_v, b_iqr)
            note = ""
            if over:
                note = {True: "beyond both runs' spread (IQR boxes apart)",
                        False: f"{NOISE_NOTE} (IQR {r_iqr:.3g} vs {b_iqr:.3g} ms)",
                        None: "spread not recorded: counted"}[sig]
            if over and sig is not False:
                held = _speedup_held(r_eff, b_eff, metric)
                if held:
                    sig, note = False, f"{DRIFT_NOTE} ({held})"
            out.append(CheckResult(mid, "efficiency", f"latency regression: {metric}", b_v, r_v, f"{pct:+.1f}%",
                                   f"max +{th.max_latency_regression:g}%", not over or sig is False, note))
    if th.min_compression is not None and res.quantized.get(mid):
        v = r_eff.get(opts.compression_metric, math.nan)
        if math.isfinite(v):
            out.append(CheckResult(mid, "efficiency", f"compression ({opts.compression_metric})", None, v,
                                   f"{v:.2f}x", f"min {th.min_compression:g}x", v + _EPS >= th.min_compression))
        else:
            notes.append(f"{mid}: no {opts.compression_metric} recorded; compression not checked")
    return out


def _speedup_held(r_eff, b_eff, metric: str) -> str | None:
    """When both runs paired this latency with a speed baseline in the same process and the
    speed-up did not fall (its intervals overlap), the whole machine was slower, not this model:
    a sentence saying so; else None (no paired speed-up in a run, or it fell)."""
    key = metric.replace("_latency_", "_speedup_").removesuffix("_ms")
    vals = [[e.get(key + s, math.nan) for s in ("", "_lo", "_hi")] for e in (r_eff, b_eff)]
    if not all(math.isfinite(v) for side in vals for v in side):
        return None
    (r, r_lo, r_hi), (b, b_lo, b_hi) = vals
    if r_hi + _EPS < b_lo:
        return None
    return f"paired speed-up {r:.2f}x [{r_lo:.2f}-{r_hi:.2f}] vs {b:.2f}x [{b_lo:.2f}-{b_hi:.2f}] before"


def _fmt(v, percent: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{100 * v:.2f}%" if percent else f"{v:.4g}"


def format_violations(report: CheckReport) -> str:
    """A plain-text table of every violation (or a line saying there are none), then notes."""
    lines = []
    v = report.violations
    if v:
        header = ("model", "target", "check", "baseline", "value", "change", "threshold", "note")
        # Accuracies are stored as fractions; people read them in percent.
        pct = {"accuracy drop"}
        rows = [(r.model_id, r.target, r.check, _fmt(r.baseline, r.check in pct), _fmt(r.value, r.check in pct),
                 r.change, r.threshold, r.note) for r in v]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
        lines.append("")
    lines.append(f"{len(report.results)} checks, {len(v)} violation{'s' if len(v) != 1 else ''}"
                 + ("" if v else ": OK"))
    lines += [f"note: {n}" for n in report.notes]
    timing_noise = [r for r in report.results if r.passed and r.note.startswith(NOISE_NOTE)]
    if timing_noise:
        lines.append(f"note: {len(timing_noise)} latency increase(s) above the threshold were within both runs' "
                     "recorded spread (their IQR boxes overlap) and not counted: "
                     + ", ".join(f"{r.model_id} {r.check.split(': ')[1]} {r.change}" for r in timing_noise[:8]))
    drift = [r for r in report.results if r.passed and r.note.startswith(DRIFT_NOTE)]
    if drift:
        lines.append(f"note: {len(drift)} latency increase(s) beyond both runs' spread were not counted: the "
                     "model's paired speed-up over its speed baseline (timed beside it) held, so the machine, not "
                     "the model, was slower: " + ", ".join(f"{r.model_id} {r.check.split(': ')[1]} {r.change}"
                                                           for r in drift[:8]))
    noise = [r for r in report.results if r.passed and "not counted (--significant-only)" in r.note]
    if noise:
        lines.append(f"note: {len(noise)} drop(s) above the threshold were within noise and not counted "
                     "(--significant-only)")
    return "\n".join(lines)
