"""``ternbench datasets list|show|validate|prepare``: look at the registry, check it, generate the mini suite."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from quant.errors import TernbenchError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "datasets",
        help="list, show and validate the datasets of datasets.yaml; prepare the embedded mini suite",
        description="The dataset registry (datasets.yaml) and the embedded mini suite.",
    )
    sub = p.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser, data_root: bool = True) -> None:
        q.add_argument(
            "--registry", metavar="FILE", help="registry file to read (default: the repo's datasets.yaml)"
        )
        if data_root:
            q.add_argument(
                "--data-root",
                metavar="DIR",
                help="folder holding local datasets (<DIR>/wds_<name>) to report on",
            )

    q = sub.add_parser("list", help="a table of every dataset (or of one suite) and where its data is")
    common(q)
    q.add_argument("--suite", metavar="NAME", help="only the datasets of this suite (or dataset names)")
    q.set_defaults(func=cmd_list)

    q = sub.add_parser("show", help="every field of one dataset, its suites, and where its data is")
    q.add_argument("name", metavar="NAME", help="dataset name, e.g. wds/vtab/cifar10 or vtab/cifar10")
    common(q)
    q.set_defaults(func=cmd_show)

    q = sub.add_parser(
        "validate", help="check datasets.yaml strictly (and the layout of local data under --data-root)"
    )
    common(q)
    q.set_defaults(func=cmd_validate)

    q = sub.add_parser(
        "prepare", help="generate embedded datasets (the mini suite) in clip_benchmark's layout"
    )
    q.add_argument(
        "suite", metavar="SUITE", nargs="?", default="mini", help="suite or dataset names (default: mini)"
    )
    q.add_argument("--root", metavar="DIR", help="where to write (default: $TERNBENCH_CACHE/data/mini)")
    q.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    q.add_argument("--force", action="store_true", help="rewrite even datasets that are up to date")
    common(q, data_root=False)
    q.set_defaults(func=cmd_prepare)


# --- where is the data --------------------------------------------------------------------------


def _availability(entry, data_root: str | None) -> tuple[str, str]:
    """(short status, detail) of where ``entry``'s data would come from, without any network."""
    from bench.datasets import loading, mini

    folder = loading.find_local(entry, data_root)
    if folder is not None:
        return "local", str(folder)
    if entry.embedded:
        try:
            ds = mini.get(entry.name)
        except TernbenchError:
            return "unknown", "embedded, but the mini generator does not know it"
        target = mini.dataset_dir(entry.name)
        if mini.is_current(ds, target, 0, mini.DEFAULT_SIZES):
            return "prepared", str(target)
        return "on first use", f"generated into {target} on first use"
    detail = entry.hf_url or ""
    switch = loading.offline_switch()
    if switch:
        return "missing", f"not local and {switch} is set ({detail})"
    return "remote", f"streamed from {detail} when online"


def _task_short(task: str) -> str:
    return task.removeprefix("zeroshot_")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- commands ----------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    from bench.datasets.registry import load_registry

    reg = load_registry(args.registry)
    entries = reg.resolve([args.suite]) if args.suite else list(reg.entries.values())
    rows = []
    for e in entries:
        status, _ = _availability(e, args.data_root)
        metric = ", ".join(e.metrics)
        rows.append([e.name, _task_short(e.task), e.group, metric, e.source, status])
    echo(_table(rows, ["NAME", "TASK", "GROUP", "METRICS", "SOURCE", "DATA"]))
    suites = ", ".join(f"{s} ({len(reg.suite_members(s))})" for s in reg.suites)
    echo(f"\n{len(entries)} datasets; suites: {suites}")
    echo(
        "DATA: local = found under --data-root; prepared / on first use = embedded mini suite; "
        "remote = Hugging Face when online; missing = offline and not local"
    )
    return 0


def cmd_show(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    from bench.datasets import loading, mini
    from bench.datasets.registry import load_registry

    reg = load_registry(args.registry)
    e = reg.get(args.name)
    fields = e.to_dict()
    fields["also_metrics"] = ", ".join(e.also_metrics) or "-"
    width = max(len(k) for k in fields) + 1
    for key, value in fields.items():
        echo(f"{key + ':':<{width}} {value}")
    echo(f"{'defined:':<{width}} {reg.path}:{e.line}")
    in_suites = [s for s in reg.suites if e.name in reg.suite_members(s)]
    echo(f"{'suites:':<{width}} {', '.join(in_suites) or '-'}")
    if e.embedded and e.name.startswith(mini.PREFIX):
        echo(f"{'content:':<{width}} {mini.get(e.name).description}")
    else:
        echo(f"{'address:':<{width}} {e.hf_url}")
    status, detail = _availability(e, args.data_root)
    echo(f"{'data:':<{width}} {status}: {detail}")
    if args.data_root:
        looked = ", ".join(str(p) for p in loading.local_candidates(e, args.data_root))
        echo(f"{'looked in:':<{width}} {looked}")
    if status in ("remote", "missing"):
        echo(
            loading.how_to_provide(e, e.split).replace("to provide it, either", "to have it locally, either")
        )
    return 0


def cmd_validate(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    from bench.datasets import loading, mini
    from bench.datasets.registry import load_registry

    reg = load_registry(args.registry)  # strict: raises on any problem in the file
    mini.check_entries(reg.entries.values(), reg.path)
    echo(f"{reg.path}: ok, {len(reg.entries)} datasets, {len(reg.suites)} suites")
    if args.data_root:
        checked = 0
        for e in reg.entries.values():
            folder = loading.find_local(e, args.data_root)
            if folder is not None:
                n = loading.count_samples(loading.shard_paths(folder, e, e.split))
                echo(f"  {e.name}: {folder} ok, {n} {e.split} samples")
                checked += 1
        echo(f"{args.data_root}: {checked} local dataset folder(s) checked")
    return 0


def cmd_prepare(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    from bench.datasets import mini
    from bench.datasets.registry import load_registry

    entries = load_registry(args.registry).resolve([args.suite])
    not_embedded = [e.name for e in entries if not e.embedded]
    if not_embedded:
        raise TernbenchError(
            f"only embedded datasets can be generated; {args.suite!r} includes {', '.join(not_embedded[:5])}"
            f"{' ...' if len(not_embedded) > 5 else ''}, which come from Hugging Face "
            "(see `ternbench datasets show NAME` for how to provide them); try `ternbench datasets prepare mini`"
        )
    root = mini.prepare_mini(
        Path(args.root) if args.root else None,
        seed=args.seed,
        names=[e.name for e in entries],
        force=args.force,
        log=echo,
    )
    echo(f"mini suite ready in {root}; evaluate with `ternbench run --datasets {args.suite}`")
    if args.root:
        echo(f"(a non-default --root: pass --data-root {root} to `ternbench run`)")
    return 0
