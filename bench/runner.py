"""The sweep runner: models x datasets x tasks -> one result file per cell, resumable and shardable.

``plan(cfg)`` validates everything a sweep names (models, datasets, suites, tasks, device,
results directory, shard) before any work starts and returns the cell list; ``run_sweep(cfg)``
runs it: each model is built once and runs all its pending cells, each cell is written
atomically as soon as it finishes (so Ctrl-C or a killed process loses at most the cell in
flight), and a failing cell is recorded with its error while the sweep goes on.

Resume is the overwrite strategy plus deterministic paths: ``missing`` (default) computes the
cells that have no result yet or whose last attempt failed, ``never`` leaves every existing
file alone, ``always`` recomputes everything. ``--shard I/N`` splits the full cell list into N
contiguous, nearly equal parts (each model's cells stay together, so a shard builds few
models), so N machines can fill one shared results directory.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import results
from bench.results import EFFICIENCY, Cell
from bench.tasks import AUTO, TASKS, TaskContext, get_task
from bench.tasks.efficiency import EfficiencyConfig
from quant.errors import TernbenchError, did_you_mean
from quant.fileio import OutputPathError, check_output_path

OVERWRITE = ("missing", "always", "never")
DEVICES = ("auto", "cpu", "cuda")



def policy_baseline(details: dict[str, Any]) -> tuple[str, str] | None:
    """(variant, why) of the sweep's speed-baseline policy as an efficiency cell applied it; None when
    the cell had none (or was the baseline itself) or paired a simulated variant with its own
    precision."""
    sb = details.get("speed_baseline") or {}
    if not sb.get("spec") or "@" not in sb["spec"] or sb.get("own_precision"):
        return None
    return sb["spec"].rsplit("@", 1)[1], sb.get("policy") or ""

class SweepError(TernbenchError, ValueError):
    """A sweep that cannot start: bad option, unknown name, unwritable results directory."""


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based: ``1/4`` .. ``4/4``)."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.count, int) and self.count >= 1):
            raise SweepError(f"shard count must be a positive integer, got {self.count!r}")
        if not (isinstance(self.index, int) and 1 <= self.index <= self.count):
            raise SweepError(f"shard index must be between 1 and {self.count} (shards are numbered 1..N), "
                             f"got {self.index!r}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            i, n = (int(x) for x in str(text).split("/"))
        except ValueError:
            raise SweepError(f"--shard takes I/N with 1 <= I <= N (e.g. 1/4), got {text!r}") from None
        return cls(i, n)

    def select(self, cells: list[Cell]) -> list[Cell]:
        """This shard's contiguous part of ``cells``; the parts of 1..N cover every cell exactly once."""
        n = len(cells)
        lo = (self.index - 1) * n // self.count
        hi = self.index * n // self.count
        return cells[lo:hi]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs; validated on construction (names are checked by ``plan``)."""

    models: tuple[str, ...]
    datasets: tuple[str, ...] = ()
    tasks: tuple[str, ...] = (AUTO,)
    out: str = "results"
    data_root: str | None = None
    cache_dir: str | None = None
    device: str = "auto"
    batch_size: int = 64
    num_workers: int = 0
    overwrite: str = "missing"
    shard: Shard = field(default_factory=Shard)
    seed: int = 0
    efficiency: EfficiencyConfig = field(default_factory=EfficiencyConfig)
    progress: bool = True
    command: tuple[str, ...] | None = None  # recorded in provenance (default: sys.argv)

    def __post_init__(self) -> None:
        for name in ("models", "datasets", "tasks"):
            v = getattr(self, name)
            object.__setattr__(self, name, (v,) if isinstance(v, str) else tuple(v))
        if not self.models:
            raise SweepError("no models given; pass at least one model spec (e.g. --models ternbench-tiny)")
        if not self.tasks:
            raise SweepError(f"no tasks given; valid: {', '.join([AUTO, *TASKS])}")
        if self.overwrite not in OVERWRITE:
            raise SweepError(f"unknown --overwrite {self.overwrite!r}{did_you_mean(self.overwrite, OVERWRITE)}; "
                             f"valid: {', '.join(OVERWRITE)}")
        for name in ("batch_size",):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SweepError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise SweepError(f"--num-workers must be an integer >= 0, got {self.num_workers!r}")
        if not isinstance(self.seed, int):
            raise SweepError(f"--seed must be an integer, got {self.seed!r}")
        if isinstance(self.shard, str):
            object.__setattr__(self, "shard", Shard.parse(self.shard))


# ---------------------------------------------------------------------------------------------
# Planning: validate everything, build the cell list
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The validated sweep: this shard's cells, plus what is needed to run them."""

    config: SweepConfig
    device: str
    out: Path
    cells: list[Cell]  # this shard's cells, in run order
    n_all_cells: int  # cells of the whole sweep (all shards)
    specs: dict[str, Any]  # model id -> bench.models.ModelSpec
    entries: dict[str, Any]  # dataset name -> DatasetEntry


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; a missing GPU is an error up front."""
    import torch

    base = results.device_type(device)
    if base not in DEVICES or (":" in device and (base != "cuda" or not device.split(":", 1)[1].isdigit())):
        raise SweepError(f"unknown --device {device!r}{did_you_mean(device, DEVICES)}; "
                         f"valid: {', '.join(DEVICES)} (or cuda:N)")
    if base == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if base == "cuda" and not torch.cuda.is_available():
        raise SweepError(f"--device {device}: no CUDA device is available here; use --device cpu (or auto)")
    return device


def check_writable(out: str | os.PathLike) -> Path:
    """Create ``out`` and prove a file can be written there, so a bad --out fails now, not in an hour."""
    try:
        return check_output_path(out, "results directory", kind="dir", hint="choose another with --out DIR")
    except OutputPathError as e:
        raise SweepError(str(e)) from None


def _expand_tasks(tasks: Iterable[str]) -> tuple[bool, list[str]]:
    """(auto?, explicit tasks), every name checked against the registry."""
    auto, explicit = False, []
    for t in tasks:
        if t == AUTO:
            auto = True
        else:
            get_task(t)
            if t not in explicit:
                explicit.append(t)
    return auto, explicit


def _model_specs(models: Iterable[str]) -> dict[str, Any]:
    from bench import models as bm

    bm.load_plugins()  # trained tags and variants register from plugins
    specs: dict[str, Any] = {}
    for raw in models:
        spec = bm.parse_spec(raw)
        other = specs.get(spec.model_id)
        if other is not None and other.raw != spec.raw and not _same_model(other, spec):
            raise SweepError(f"models {other.raw!r} and {spec.raw!r} would share the results folder "
                             f"{spec.model_id!r}; rename one of the files")
        specs.setdefault(spec.model_id, spec)
    return specs


def _same_model(a: Any, b: Any) -> bool:
    return (a.source, a.arch, a.pretrained, a.path, a.hub_id, a.variant) == (
        b.source, b.arch, b.pretrained, b.path, b.hub_id, b.variant)


def plan(cfg: SweepConfig) -> Plan:
    """Validate the sweep and list its cells; raises ``TernbenchError`` before any work starts."""
    from bench.datasets import registry

    auto, explicit = _expand_tasks(cfg.tasks)
    dataset_tasks = [t for t in explicit if TASKS[t].needs_dataset]
    if (auto or dataset_tasks) and not cfg.datasets:
        raise SweepError("no datasets given; pass --datasets NAME|SUITE (e.g. mini, clip41) "
                         "or --tasks efficiency for speed and size only")
    entries = {e.name: e for e in registry.resolve(list(cfg.datasets))} if cfg.datasets else {}
    for t in dataset_tasks:
        if not any(e.task == t for e in entries.values()):
            have = sorted({e.task for e in entries.values()})
            raise SweepError(f"task {t!r} applies to none of the datasets given (their tasks: {', '.join(have)}); "
                             f"use --tasks auto to run each dataset's own task")
    if cfg.data_root is not None and not Path(cfg.data_root).expanduser().is_dir():
        raise SweepError(f"--data-root {cfg.data_root!r} is not a directory; it should hold one folder per "
                         "dataset in clip_benchmark's layout (e.g. wds_vtab-cifar10/)")
    device = resolve_device(cfg.device)
    specs = _model_specs(cfg.models)
    out = check_writable(cfg.out)

    want_efficiency = auto or EFFICIENCY in explicit
    settings = results.settings_key(cfg.efficiency.settings(device)) if want_efficiency else ""
    cells: list[Cell] = []
    for model_id, spec in specs.items():
        if want_efficiency:
            cells.append(Cell(spec.raw, None, EFFICIENCY, device, model_id=model_id, settings=settings))
        for entry in entries.values():
            for task in ([entry.task] if auto else []) + [t for t in dataset_tasks if t == entry.task]:
                cell = Cell(spec.raw, entry.name, task, device, model_id=model_id)
                if cell not in cells:
                    cells.append(cell)
    return Plan(cfg, device, out, cfg.shard.select(cells), len(cells), specs, entries)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


@dataclass
class SweepSummary:
    out: Path
    n_all_cells: int
    n_shard_cells: int
    skipped: int = 0
    ran: int = 0
    failed: list[str] = field(default_factory=list)  # cell ids that end in error
    written: list[Path] = field(default_factory=list)
    random_weights: list[str] = field(default_factory=list)
    interrupted: bool = False
    elsewhere: list[str] = field(default_factory=list)  # cell ids another run was computing (left to it)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


def will_run(path: Path | Cell, overwrite: str, out: Path | None = None) -> bool:
    """Whether a cell (or the cell whose result path is ``path``) is computed under ``overwrite``.

    ``missing``: no result yet, the last attempt failed, or (a ``Cell`` with measurement
    settings, given with its results directory ``out``) the result was measured differently.
    """
    cell = path if isinstance(path, Cell) else None
    path = cell.path(out) if cell is not None else path
    if overwrite == "always":
        return True
    if overwrite == "never":
        return not path.exists()
    if results.is_done(path) != "ok":
        return True
    return bool(cell is not None and cell.settings and results.changed_settings(path, cell.settings))


def _error_text(e: BaseException) -> str:
    if isinstance(e, TernbenchError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def _summary_line(i: int, n: int, cell: Cell, record: dict[str, Any], seconds: float) -> str:
    width = len(str(n))
    head = f"[{i:>{width}}/{n}] {record['status']:<5} {cell.label()}"
    if record["status"] == "ok":
        main = record.get("main_metric")
        value = record["metrics"].get(main) if main else None
        shown = f"{main}={value:.4f}" if isinstance(value, float) else ""
        return f"{head}  {shown}  ({seconds:.1f}s)"
    msg = (record.get("error") or "").splitlines()[0] if record.get("error") else ""
    return f"{head}  {msg[:200]}  ({seconds:.1f}s)"


class _Runner:
    """Runs a plan; one instance per sweep (holds the provenance parts that do not change)."""

    def __init__(self, p: Plan, echo: Callable[[str], None]):
        self.p = p
        self.cfg = p.config
        self.echo = echo
        self.git_rev = results.git_revision() or ""
        self.command = list(self.cfg.command) if self.cfg.command is not None else list(sys.argv)
        self.noted: set[str] = set()
        self.chosen_baselines: dict[str, tuple[str, str]] = {}

    def prov(self) -> dict[str, Any]:
        return results.provenance(self.p.device, self.cfg.seed, self.command, git_rev=self.git_rev)

    def model_stub(self, model_id: str) -> dict[str, Any]:
        spec = self.p.specs[model_id]
        return {"spec": spec.raw, "model_id": model_id, "arch": spec.arch, "pretrained": spec.pretrained,
                "variant": spec.variant, "precision": None, "quant_config": None, "checkpoint_sha256": None,
                "random_weights": None}

    def dataset_info(self, entry: Any, data: Any = None) -> dict[str, Any]:
        n = getattr(data, "n_samples", None) if data is not None else None
        return {"name": entry.name, "group": entry.group, "split": entry.split, "version": entry.version,
                "n_samples": n}

    def record_error(self, cell: Cell, model: dict[str, Any], error: str, t0: float,
                     tb: str | None = None) -> dict[str, Any]:
        entry = self.p.entries.get(cell.dataset) if cell.dataset else None
        return results.make_record(
            cell, model=model, dataset=self.dataset_info(entry) if entry else None, error=error,
            timings={"total_s": time.perf_counter() - t0}, details={"traceback": tb} if tb else None,
            prov=self.prov())

    def build(self, model_id: str, summary: SweepSummary) -> tuple[Any, tuple[str, float, str | None] | None, float]:
        """(built model, None, build seconds), or (None, (error, start, traceback), 0) when it cannot be built."""
        import torch

        from bench import models as bm

        t0 = time.perf_counter()
        try:
            torch.manual_seed(self.cfg.seed)  # random-weight models are the same in every run
            built = bm.build_model(self.p.specs[model_id], device=self.p.device)
        except Exception as e:  # a model that cannot be built fails its cells, the sweep goes on
            tb = None if isinstance(e, TernbenchError) else traceback.format_exc(limit=8)
            return None, (_error_text(e), t0, tb), 0.0
        if built.info.get("random_weights") and built.spec.raw not in summary.random_weights:
            self.note_random(built.spec.raw)
        return built, None, time.perf_counter() - t0

    def note_random(self, spec: str) -> None:
        if spec not in self.noted:
            self.noted.add(spec)
            self.echo(f"note: {spec} has RANDOM WEIGHTS (no trained checkpoint): accuracies are "
                      "chance level; speed and size numbers are still meaningful")

    def run_isolated(self, cell: Cell) -> dict[str, Any]:
        """An isolated cell: a fresh worker process builds the model and runs the task, under the
        host-wide lock; a worker that fails, crashes or hangs fails only this cell."""
        from dataclasses import asdict

        from bench import isolation

        t0 = time.perf_counter()
        spec = self.p.specs[cell.model_id]
        eff = self.cfg.efficiency.resolved()
        # Where the worker chooses the speed baseline by timing (bf16 or fp32 on a CPU), the first
        # choice for an architecture holds for the rest of the sweep, so its rows share one baseline.
        family = spec.raw.rsplit("@", 1)[0] if spec.source != "packed" else None
        request = {"spec": spec.raw, "task": cell.task, "device": self.p.device, "seed": self.cfg.seed,
                   "config": asdict(eff), "imports": isolation.registering_modules(spec, cell.task),
                   "speed_baseline": self.chosen_baselines.get(family)}
        task = get_task(cell.task)
        outs = []
        try:
            with isolation.host_lock(self.echo):
                for _ in range(eff.processes if task.merge else 1):
                    outs.append(isolation.run_in_worker(request, eff.timeout_s, env=dict(task.worker_env)))
                    # later workers pair with the baseline the first one chose (no second probe)
                    request["speed_baseline"] = request["speed_baseline"] or policy_baseline(outs[0].get("details") or {})
        except TernbenchError as e:
            which = f"worker {len(outs) + 1} of {eff.processes}: " if task.merge and eff.processes > 1 else ""
            return self.record_error(cell, self.model_stub(cell.model_id), f"{which}{e}", t0)
        out = task.merge_results(outs)
        if out["info"].get("random_weights"):
            self.note_random(out["info"].get("spec") or spec.raw)
        chosen = policy_baseline(out.get("details") or {})
        if family and chosen:
            self.chosen_baselines.setdefault(family, chosen)
        timings = dict(out.get("timings") or {}) | {"total_s": time.perf_counter() - t0}
        return results.make_record(
            cell, model=out["info"], dataset=None, metrics=out["metrics"], main_metric=out["main_metric"],
            timings=timings, baselines=out["baselines"], details=out["details"], prov=self.prov())

    def run_cell(self, cell: Cell, built: Any) -> dict[str, Any]:
        import torch

        t0 = time.perf_counter()
        task = get_task(cell.task)
        entry = self.p.entries.get(cell.dataset) if cell.dataset else None
        data = None
        timings: dict[str, float] = {}
        try:
            torch.manual_seed(self.cfg.seed)
            if task.needs_dataset:
                from bench.datasets import loading

                t = time.perf_counter()
                data = loading.build(entry, built.preprocess, data_root=self.cfg.data_root,
                                     cache_dir=self.cfg.cache_dir)
                timings["load_data_s"] = time.perf_counter() - t
            ctx = TaskContext(
                model=built.model, tokenizer=built.tokenizer, dtype=built.precision, device=self.p.device,
                model_info=built.info, entry=entry, data=data, batch_size=self.cfg.batch_size,
                num_workers=self.cfg.num_workers, efficiency=self.cfg.efficiency, progress=self.cfg.progress,
                seed=self.cfg.seed)
            t = time.perf_counter()
            res = task.run(ctx)
            timings["task_s"] = time.perf_counter() - t
        except Exception as e:  # one failing cell is recorded; the sweep goes on
            tb = None if isinstance(e, TernbenchError) else traceback.format_exc(limit=8)
            return self.record_error(cell, built.info, _error_text(e), t0, tb)
        timings["total_s"] = time.perf_counter() - t0
        return results.make_record(
            cell, model=built.info, dataset=self.dataset_info(entry, data) if entry else None,
            metrics=res.metrics, main_metric=res.main_metric, timings=timings, baselines=res.baselines,
            details=res.details, prov=self.prov())


def _release_memory(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def describe(p: Plan, todo: list[Cell], to_train: Iterable[str] = ()) -> str:
    """What a sweep is about to do, in one line: cells to run and kept, models to build or train."""
    n_models, n_data = len(p.specs), len(p.entries)
    has_eff = any(c.dataset is None for c in p.cells)
    grid = f"{n_models} model{'s' * (n_models != 1)}"
    if n_data:
        grid += f" x {n_data} dataset{'s' * (n_data != 1)}" + (" + efficiency" if has_eff else "")
    elif has_eff:
        grid += " x efficiency"
    shard = f", shard {p.config.shard} of {p.n_all_cells} cells" if p.config.shard.count > 1 else ""
    build = len({c.model_id for c in todo})
    train = list(to_train)
    trains = f"; trains first: {', '.join(train)}" if train else (", nothing to train" if build else "")
    work = f"{build} model{'s' * (build != 1)} to build{trains}" if todo else "nothing to compute"
    return (f"ternbench run: {len(todo)} of {len(p.cells)} cells to run ({grid}{shard}) on {p.device}, "
            f"{len(p.cells) - len(todo)} kept (--overwrite {p.config.overwrite}); results in {p.out}; {work}")


def run_sweep(cfg: SweepConfig | Plan, echo: Callable[[str], None] | None = None,
              to_train: Iterable[str] = (), notes: Iterable[str] = ()) -> SweepSummary:
    """Run a sweep (or an already validated plan); returns what was written and what failed.

    The first line echoed says what will happen (``describe``); ``to_train`` names models whose
    weights are trained when they are first built, ``notes`` are echoed right after it."""
    import torch
    from tqdm import tqdm

    from bench import isolation

    p = cfg if isinstance(cfg, Plan) else plan(cfg)
    cfg = p.config
    echo = echo or tqdm.write
    summary = SweepSummary(p.out, p.n_all_cells, len(p.cells))
    todo = [c for c in p.cells if will_run(c, cfg.overwrite, p.out)]
    summary.skipped = len(p.cells) - len(todo)
    echo(describe(p, todo, to_train))
    for note in notes:
        echo(note)
    runner = _Runner(p, echo)
    if p.device.startswith("cuda:"):
        # clip_benchmark moves batches to the bare device type ("cuda"): make that the chosen GPU.
        torch.cuda.set_device(torch.device(p.device))
    by_model: dict[str, list[Cell]] = {}
    for c in todo:
        by_model.setdefault(c.model_id, []).append(c)

    token = isolation.new_token()
    bar = tqdm(total=len(todo), desc="sweep", unit="cell", disable=not cfg.progress, dynamic_ncols=True)
    i = 0
    held: list[Path] = []
    try:
        for model_id, cells in by_model.items():
            # Claim the model's cells, so another run into the same directory leaves them to this one.
            mine = []
            for cell in cells:
                path = cell.path(p.out)
                owner = isolation.claim(path, token)
                if owner is not None:
                    i += 1
                    summary.elsewhere.append(cell.cell_id)
                    echo(f"[{i:>{len(str(len(todo)))}}/{len(todo)}] skip  {cell.label()}  "
                         f"{isolation.describe_claim(owner)}")
                    bar.update(1)
                    continue
                held.append(path)
                mine.append(cell)
            built, built_err = None, None
            for cell in mine:
                i += 1
                t = time.perf_counter()
                path = cell.path(p.out)
                if not will_run(cell, cfg.overwrite, p.out):  # finished by another run meanwhile
                    summary.skipped += 1
                    isolation.release(path, token)
                    bar.update(1)
                    continue
                if get_task(cell.task).isolated:
                    record = runner.run_isolated(cell)
                else:  # never beside a measurement of another run on this host (it waits for this cell)
                    with isolation.host_lock(echo, shared=True):
                        if built is None and built_err is None:
                            built, built_err, build_s = runner.build(model_id, summary)
                        if built is None:
                            record = runner.record_error(cell, runner.model_stub(model_id), *built_err)
                        else:
                            record = runner.run_cell(cell, built)
                            record["timings"]["build_model_s"] = round(build_s, 4)
                if ((record.get("model") or {}).get("random_weights")
                        and record["model"]["spec"] not in summary.random_weights):
                    summary.random_weights.append(record["model"]["spec"])
                summary.written.append(results.write(p.out, cell, record))
                isolation.release(path, token)
                summary.ran += 1
                echo(_summary_line(i, len(todo), cell, record, time.perf_counter() - t))
                bar.update(1)
            del built
            _release_memory(p.device)
    except KeyboardInterrupt:
        summary.interrupted = True
        echo(f"interrupted: {summary.ran} cells written this run are kept in {p.out}; "
             "rerun the same command to finish the rest (finished cells are not recomputed)")
        raise
    finally:
        for path in held:
            isolation.release(path, token)
        bar.close()
    summary.failed = [c.cell_id for c in p.cells if results.is_done(c.path(p.out)) == "error"]
    return summary
