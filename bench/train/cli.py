"""``ternbench train pretrain|qat|convert|embedded``: the command line of quant.train.

Flags map onto ``TrainConfig`` fields; ``--config FILE.json`` gives a whole config and flags given
explicitly override it. Heavy imports stay inside the handlers. Under ``torchrun`` the same
command trains with DDP (``torchrun --nproc-per-node 2 -m bench.cli train qat ...``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from quant.errors import TernbenchError

# flag dest -> TrainConfig field (top level) / QATConfig / DistillConfig field.
TOP_FIELDS = ("model", "steps", "batch_size", "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip", "seed",
              "shuffle_buffer", "contrastive_weight", "label_positives", "precision", "checkpoint_every",
              "log_every", "progress")
QAT_FIELDS = ("preset", "method", "threshold", "granularity", "group_size", "int8_steps")
DISTILL_FIELDS = ("teacher", "kl_weight", "temperature", "kl_direction", "embed_weight", "embed_loss", "projection")


def _common(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--data", action="append", metavar="PATTERN",
                   help="training shards: a webdataset pattern ('dir/{0..9}.tar', 'dir/*.tar', 'https://host/"
                        "x-{000..099}.tar') or a clip_benchmark dataset folder (its train split); repeat to mix")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder: config.json, log.jsonl, checkpoints")
    p.add_argument("--config", metavar="FILE.json", help="a TrainConfig as JSON (flags override its fields)")
    p.add_argument("--model", help="student start: ARCH (random init), ARCH:PRETRAINED, ARCH:FILE, or a run folder/"
                                   "checkpoint" + (" (default ternbench-tiny)" if kind == "pretrain" else
                                                   " (default: the teacher)"))
    p.add_argument("--steps", type=int, help="optimizer steps (default 100)")
    p.add_argument("--batch-size", type=int, help="global batch, split over DDP processes (default 64)")
    p.add_argument("--lr", type=float, help="peak learning rate of AdamW (default 1e-3)")
    p.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine decay (default 0)")
    p.add_argument("--warmup-steps", type=int, help="linear warmup steps (default 10)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay of matrices (default 0.1)")
    p.add_argument("--grad-clip", type=float, help="gradient norm clip, 0 = off (default 1.0)")
    p.add_argument("--seed", type=int, help="seed of initialization and data order (default 0)")
    p.add_argument("--shuffle-buffer", type=int, help="samples in the shuffle buffer (default 2048)")
    p.add_argument("--contrastive-weight", type=float,
                   help="weight of CLIP's contrastive loss on the true pairs (default: 1 pretrain, 0 qat)")
    p.add_argument("--no-label-positives", dest="label_positives", action="store_const", const=False,
                   help="treat same-class pairs as negatives (plain CLIP loss) instead of positives")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="autocast dtype (default fp32; "
                   "fp16 needs a GPU)")
    p.add_argument("--checkpoint-every", type=int, help="write a checkpoint every N steps, 0 = only at the end")
    p.add_argument("--log-every", type=int, help="write a log.jsonl record every N steps (default 1)")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", metavar="CHECKPOINT", help="resume from this checkpoint or run folder "
                   "(default: resume from --out when it holds checkpoints)")
    g.add_argument("--overwrite", action="store_true", help="discard the checkpoints in --out and start afresh")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")


def add_parser(subparsers) -> None:
    t = subparsers.add_parser("train", help="pretrain a CLIP, QAT+distil a ternary student, convert it to a "
                              "packed checkpoint", description="Training: contrastive pretraining, "
                              "quantization-aware training with distillation, conversion to a packed file.")
    sub = t.add_subparsers(dest="train_command", metavar="{pretrain,qat,convert,embedded}", required=True)

    pre = sub.add_parser("pretrain", help="contrastive (CLIP) training on image-text webdataset shards",
                         description="Contrastive (CLIP) training of an open_clip model on image-text shards.")
    _common(pre, "pretrain")
    pre.set_defaults(func=run_train, kind="pretrain")

    qat = sub.add_parser("qat", help="quantization-aware training of a ternary student distilled from a teacher",
                         description="Fake-quantized (STE) ternary student trained from a frozen full-precision "
                                     "teacher: KL on similarity logits, embedding distance, optional contrastive.")
    _common(qat, "qat")
    qat.add_argument("--teacher", help="the frozen teacher: a model spec or a run folder (required)")
    qat.add_argument("--preset", help="which weights: q-ffn, q-attn, q-all (+ -v / -t) (default q-all)")
    qat.add_argument("--method", help="absmean, twn, tervit (default absmean)")
    qat.add_argument("--threshold", type=float, help="absmean factor k: s = k * mean|W| (default 1.0)")
    qat.add_argument("--granularity", help="one scale per tensor, channel or group (default tensor)")
    qat.add_argument("--group-size", type=int, help="inputs per scale with --granularity group (default 128)")
    qat.add_argument("--int8-steps", type=int, help="TerViT's progressive schedule: train 8-bit weights for the "
                                                    "first N steps, then ternary (default 0)")
    qat.add_argument("--kl-weight", type=float, help="weight of the logit KL loss (default 1)")
    qat.add_argument("--temperature", type=float, help="temperature of the logit KL (default 2)")
    qat.add_argument("--kl-direction", choices=("forward", "reverse"), help="KL(teacher||student) or reverse")
    qat.add_argument("--embed-weight", type=float, help="weight of the embedding loss (default 1)")
    qat.add_argument("--embed-loss", choices=("cosine", "mse"), help="embedding distance (default cosine)")
    qat.add_argument("--projection", action="store_const", const=True,
                     help="learn a linear map when the teacher's embedding width differs from the student's")
    qat.set_defaults(func=run_train, kind="qat")

    conv = sub.add_parser("convert", help="a trained QAT student -> packed ternary .safetensors",
                          description="Pack the student of a `train qat` run for `ternbench run --models FILE`.")
    conv.add_argument("run", metavar="RUN", help="a `train qat` run folder (its final.pt) or a checkpoint file")
    conv.add_argument("--out", required=True, metavar="FILE.safetensors", help="the packed checkpoint to write")
    conv.add_argument("--packing", default="base3", choices=("base3", "2bit"),
                      help="base3: 5 trits a byte (1.6 bits); 2bit: 4 trits a byte (default base3)")
    conv.add_argument("--float-dtype", default="fp32", choices=("fp32", "fp16"),
                      help="dtype of non-ternary tensors and scales (default fp32: outputs bit-identical)")
    conv.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    conv.set_defaults(func=run_convert)

    emb = sub.add_parser("embedded", help="find (shipped or cached) or train the embedded teacher ternbench-tiny:mini "
                         "and its QAT+KD students", description="Where the embedded teacher and students come from: "
                         "the weights shipped in the repo while their recipe matches the code's, else the cache, else "
                         "training on the mini suite (cached). --retrain reproduces the shipped files from the repo.")
    emb.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    emb.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    emb.add_argument("--retrain", action="store_true", help="ignore the weights shipped in the repo: use the cache or "
                     "train (reproduces the shipped files)")
    emb.add_argument("--ship", action="store_true", help="(maintainers) implies --retrain, then copies the models "
                     "into bench/embedded/weights/ with a manifest of their recipe keys")
    emb.set_defaults(func=run_embedded)


def build_config(args: argparse.Namespace):
    """The TrainConfig of a `train pretrain|qat` invocation: --config file, then explicit flags."""
    from bench.embedded import TINY_MODEL
    from quant.train.config import TrainConfig

    base: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise TernbenchError(f"--config {path}: no such file")
        base = TrainConfig.from_json(path.read_text()).to_dict()
    if args.data:
        base["data"] = args.data
    for name in TOP_FIELDS:
        if getattr(args, name, None) is not None:
            base[name] = getattr(args, name)
    if args.kind == "qat":
        qat = dict(base.get("qat") or {})
        qat.update({k: getattr(args, k) for k in QAT_FIELDS if getattr(args, k, None) is not None})
        distill = dict(base.get("distill") or {})
        distill.update({k: getattr(args, k) for k in DISTILL_FIELDS if getattr(args, k, None) is not None})
        if not distill.get("teacher"):
            raise TernbenchError("train qat needs a teacher: --teacher SPEC (e.g. ternbench-tiny:mini or a "
                                 "`train pretrain` run folder)")
        base["qat"], base["distill"] = qat, distill
        base.setdefault("contrastive_weight", 0.0)
    if not base.get("model"):
        # The student's start: the qat student starts from its teacher, pretraining from the embedded
        # architecture (quant.train names no default model).
        base["model"] = base["distill"]["teacher"] if args.kind == "qat" else TINY_MODEL
    if not base.get("data"):
        raise TernbenchError("no training data: pass --data PATTERN (webdataset shards or a clip_benchmark "
                             "dataset folder), or a --config whose data lists some")
    return TrainConfig.from_dict(base)


def run_train(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    if args.print_config:
        print(json.dumps(json.loads(cfg.to_json()), indent=2))
        return 0
    from bench.train.run import train
    from quant.fileio import check_output_path

    check_output_path(args.out, "--out", kind="dir", hint="the run folder of config.json, log.jsonl and checkpoints")
    resume = args.resume if args.resume else (None if args.overwrite else "auto")
    result = train(cfg, args.out, resume=resume, overwrite=args.overwrite, device=args.device)
    if result.records:
        last = result.records[-1]
        terms = ", ".join(f"{k} {last[k]:.4f}" for k in ("loss", "contrastive", "kl", "embed") if k in last)
        print(f"{cfg.kind}: {result.steps_run} steps in {result.wall_s:.1f} s "
              f"({result.steps_run / max(result.wall_s, 1e-9):.2f} steps/s); last step {last['step']}: {terms}")
    if result.resumed_from:
        print(f"resumed from step {result.resumed_from}")
    print(f"final checkpoint: {result.final_checkpoint}; log: {Path(args.out) / 'log.jsonl'}")
    if cfg.kind == "qat" and result.final_checkpoint:
        print(f"next: ternbench train convert {args.out} --out STUDENT.safetensors")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from bench.train.run import convert
    from quant import load_packed, stats
    from quant.fileio import check_output_path

    check_output_path(args.out, "--out")
    path = convert(args.run, args.out, packing=args.packing, float_dtype=args.float_dtype, force=args.force)
    total = stats(load_packed(path)).total
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {args.packing} packing); "
          f"ternary share {total.get('share_ternary', 0):.1%}, sparsity {total.get('sparsity', 0):.1%}")
    print(f"evaluate it: ternbench run --models {path}")
    return 0


def run_embedded(args: argparse.Namespace) -> int:
    import time

    from bench.train import embedded

    t = time.perf_counter()
    if args.ship:
        print(f"shipped to {embedded.ship(device=args.device, progress=args.progress)}")
    shipped = not (args.retrain or args.ship)
    teacher = embedded.teacher_path(device=args.device, progress=args.progress, shipped=shipped)
    print(f"{embedded.TEACHER_ARCH}:{embedded.TEACHER_TAG}: {teacher}")
    for variant in embedded.STUDENTS:
        path = embedded.student_path(variant, device=args.device, progress=args.progress, shipped=shipped)
        print(f"{embedded.TEACHER_ARCH}:{embedded.TEACHER_TAG}@{variant}: {path}")
    print(f"ready in {time.perf_counter() - t:.0f} s (shipped in {embedded.shipped_dir()}, cached under "
          f"{embedded.models_dir()})")
    return 0
