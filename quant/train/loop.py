"""The one training loop behind ``ternbench train pretrain`` and ``ternbench train qat``.

AdamW with linear warmup and a cosine decay; a tqdm bar (loss, step rate) and a JSONL log of
every loss term; a checkpoint every N steps and at the end holding the model, optimizer,
scheduler, grad scaler, RNG states, data position and the config, so an interrupted run resumes
with the same batches and, up to hardware nondeterminism, the same result. A checkpoint of another
config is refused with the fields that differ. A non-finite loss stops training, naming the step
and the last good checkpoint. bf16/fp16 autocast on GPU. Under ``torchrun`` the same command runs
DDP (nccl on GPU, gloo on CPU): features are gathered over ranks before the losses, so every rank
computes the loss of the global batch, exactly as one process would.

The caller builds the models: the student (a float open_clip model) and, with ``distill``, the
teacher (see :mod:`quant.train.models`). QAT: the student is ``quant.prepare``-d (fake-quant
weights, straight-through estimator); with ``qat.int8_steps`` > 0 it trains 8-bit weights first and
switches to ternary at that step (TerViT's progressive schedule). The frozen teacher adds the
distillation losses. Resuming loads the checkpoint into the student given, in the quantization
phase of the checkpoint's step, after checking that the student has the checkpoint's tensors.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from quant.errors import TernbenchError
from quant.fileio import atomic_path, atomic_write_text
from quant.train import losses
from quant.train.config import TrainConfig, config_diff
from quant.train.data import PairBatches, resolve_sources
from quant.train.distill import Teacher
from quant.train.models import LoadedClip
from quant.train.runs import FINAL, checkpoint_path, latest_checkpoint

KEEP_CHECKPOINTS = 2
LOG_FILE = "log.jsonl"


class ResumeError(TernbenchError, ValueError):
    """A checkpoint that cannot continue this run (another config, a corrupt file)."""


class TrainingDiverged(TernbenchError, RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class DistEnv:
    """This process's place in a (possibly one-process) distributed run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistEnv:
    """Read torchrun's environment; start the process group (nccl on GPU, gloo on CPU) when > 1 process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local}"  # one GPU per process under torchrun
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return DistEnv(rank, world, local, device)


class Student(nn.Module):
    """The trained CLIP plus the optional learned projection into the teacher's embedding space."""

    def __init__(self, clip: nn.Module, projection: nn.Module | None):
        super().__init__()
        self.clip = clip
        self.proj = projection

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        img = self.clip.encode_image(images, normalize=True)
        txt = self.clip.encode_text(tokens, normalize=True)
        return img, txt, self.clip.logit_scale.exp()


def _gather(x: torch.Tensor, env: DistEnv, with_grad: bool) -> torch.Tensor:
    if not env.distributed:
        return x
    if with_grad:
        import torch.distributed.nn.functional as dist_fn

        return torch.cat(dist_fn.all_gather(x), dim=0)
    parts = [torch.empty_like(x) for _ in range(env.world_size)]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


def compute_losses(cfg: TrainConfig, student_out, teacher_out, projection: nn.Module | None,
                   groups: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every weighted loss term of the config, and their sum under ``"loss"`` (global-batch features)."""
    s_img, s_txt, s_scale = (t.float() for t in student_out)
    terms: dict[str, torch.Tensor] = {}
    if cfg.contrastive_weight > 0:
        groups = groups if cfg.label_positives else None
        terms["contrastive"] = cfg.contrastive_weight * losses.contrastive_loss(s_img, s_txt, s_scale, groups)
    d = cfg.distill
    if d is not None and teacher_out is not None:
        t_img, t_txt, t_scale = teacher_out
        if d.kl_weight > 0:
            s_logits = losses.similarity_logits(s_img, s_txt, s_scale)
            t_logits = losses.similarity_logits(t_img, t_txt, t_scale)
            terms["kl"] = d.kl_weight * losses.logit_kl_loss(s_logits, t_logits, d.temperature, d.kl_direction)
        if d.embed_weight > 0:
            p_img, p_txt = (projection(s_img), projection(s_txt)) if projection is not None else (s_img, s_txt)
            terms["embed"] = d.embed_weight * 0.5 * (losses.embedding_loss(p_img, t_img, d.embed_loss)
                                                     + losses.embedding_loss(p_txt, t_txt, d.embed_loss))
    terms["loss"] = sum(terms.values())
    return terms


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to 1, then cosine decay to ``min_lr / lr`` at the last step."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr / cfg.lr
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # open_clip's rule: no decay on gains, biases, norms, logit scale and embeddings' 1-D params.
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if skip else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def quant_phase(cfg: TrainConfig, step: int) -> str:
    """``fp`` (no QAT), ``int8`` (TerViT's first phase) or ``ternary`` for the step about to run."""
    if cfg.qat is None:
        return "fp"
    return "int8" if step < cfg.qat.int8_steps else "ternary"


def apply_phase(model: nn.Module, cfg: TrainConfig, phase: str) -> None:
    """Attach the fake-quantization of ``phase``; parameters keep their identity (optimizer state stays)."""
    from quant import prepare

    if phase == "int8":
        prepare(model, cfg.qat.int8_config())
    elif phase == "ternary":
        prepare(model, cfg.qat.ternary_config())


def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """A training checkpoint's contents; ``mmap`` reads tensors only when touched (to look at its config)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # a truncated or foreign file: say which and why
        raise ResumeError(f"cannot read checkpoint {path}: {e}") from None


def _listed(names: list[str], limit: int = 4) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_matches(module: nn.Module, state: dict[str, torch.Tensor], path: Path, hint: str = "") -> None:
    """Refuse (ResumeError) a checkpoint whose tensors are not the module's: names and shapes."""
    have = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in state.items()}
    problems = []
    missing = [k for k in saved if k not in have]
    if missing:
        problems.append(f"{len(missing)} tensor(s) of the checkpoint are not in the model ({_listed(missing)})")
    extra = [k for k in have if k not in saved]
    if extra:
        problems.append(f"{len(extra)} tensor(s) of the model are not in the checkpoint ({_listed(extra)})")
    shapes = [f"{k}: checkpoint {list(saved[k])}, model {list(have[k])}" for k in saved
              if k in have and saved[k] != have[k]]
    if shapes:
        problems.append(f"{len(shapes)} shape(s) differ ({_listed(shapes, 3)})")
    if problems:
        raise ResumeError(f"checkpoint {path} does not fit the model given: {'; '.join(problems)}. {hint}".rstrip())


def load_student(model: nn.Module, ckpt: dict[str, Any], path: Path) -> nn.Module:
    """The trained student of a checkpoint, loaded into ``model``: a float model of the checkpoint's
    architecture (``ckpt["arch"]``) that the caller built. The checkpoint step's quantization phase is
    applied, the weights loaded, and a QAT student converted (weights become exactly their quantized
    values, as ``quant.convert`` makes them). A model of other tensors is refused (ResumeError)."""
    from quant.apply import convert
    from quant.state import recorded_origin, update_origin

    if "config" not in ckpt or "model" not in ckpt:
        raise ResumeError(f"{path} is not a ternbench training checkpoint (no config or model inside)")
    cfg = TrainConfig.from_json(ckpt["config"])
    apply_phase(model, cfg, quant_phase(cfg, int(ckpt["step"])))
    state = {k[len("clip."):]: v for k, v in ckpt["model"].items() if k.startswith("clip.")}
    check_matches(model, state, path, f"Build the architecture it was trained with ({ckpt.get('arch')!r}).")
    model.load_state_dict(state)
    if recorded_origin(model) is not None:
        update_origin(model, random_weights=False)
    if cfg.qat is not None:
        convert(model)
    return model


def check_resumable(ckpt: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse a checkpoint written by another config, naming the fields that differ."""
    if "config" not in ckpt:
        raise ResumeError(f"{path} is not a ternbench training checkpoint (no config inside)")
    saved = TrainConfig.from_json(ckpt["config"])
    diff = config_diff(saved, cfg)
    if diff:
        lines = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ResumeError(
            f"checkpoint {path} was written by a different training config ({lines}). Use the same config "
            "to resume, another --out folder, or --overwrite to start afresh"
        )


@dataclass
class TrainResult:
    """What a run produced: its folder, final checkpoint, the logged records, and the trained model."""

    out_dir: Path
    final_checkpoint: Path | None
    records: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None
    arch: str = ""
    steps_run: int = 0
    wall_s: float = 0.0
    resumed_from: int = 0


class _Logger:
    """JSONL log of loss records (main rank only); on resume, drops records past the checkpoint."""

    def __init__(self, path: Path, enabled: bool, resume_step: int):
        self.path, self.enabled = path, enabled
        if enabled:
            kept = []
            if resume_step and path.is_file():
                kept = [line for line in path.read_text().splitlines()
                        if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")


def read_log(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / LOG_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _autocast(cfg: TrainConfig, device: str):
    if cfg.precision == "fp32":
        return torch.autocast(device_type=device.split(":")[0], enabled=False)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _checkpoint_to_resume(out_dir: Path, resume: str | Path | None, overwrite: bool, env: DistEnv) -> Path | None:
    """Which checkpoint a run continues from (see :func:`train`), or None to start afresh."""
    if overwrite:
        if env.is_main:
            for p in [*out_dir.glob("checkpoint-*.pt"), out_dir / FINAL, out_dir / LOG_FILE]:
                p.unlink(missing_ok=True)
        _barrier(env)
        return None
    existing = latest_checkpoint(out_dir) if out_dir.is_dir() else None
    if resume == "auto":
        return existing
    if resume is None:
        if existing is not None:
            raise ResumeError(f"{out_dir} already holds checkpoints of a run; resume it, use --overwrite, "
                              "or choose another --out folder")
        return None
    path = Path(resume)
    path = latest_checkpoint(path) if path.is_dir() else path
    if path is None or not path.is_file():
        raise ResumeError(f"no checkpoint to resume at {resume} (looked for {FINAL} and checkpoint-*.pt)")
    return path


def _check_models(cfg: TrainConfig, student: LoadedClip, teacher: LoadedClip | None) -> None:
    for name, given in (("student", student), ("teacher", teacher)):
        if given is not None and not isinstance(given, LoadedClip):
            raise TypeError(f"the {name} must be a quant.train.models.LoadedClip (LoadedClip.of(model, arch)), "
                            f"got {type(given).__name__}")
    if cfg.distill is not None and teacher is None:
        raise TernbenchError(f"the config distils from the teacher {cfg.distill.teacher!r}: pass the built "
                             "teacher model (teacher=...)")
    if cfg.distill is None and teacher is not None:
        raise TernbenchError("a teacher was given but the config has no distill section: set cfg.distill "
                             "(a DistillConfig) to distil from it, or pass no teacher")


def train(cfg: TrainConfig, out_dir: str | Path, *, student: LoadedClip, teacher: LoadedClip | None = None,
          resume: str | Path | None = "auto", overwrite: bool = False, device: str | None = None,
          stop_at_step: int | None = None) -> TrainResult:
    """Run (or resume) one training run of ``student`` into ``out_dir``.

    ``student``: the model to train, built by the caller: a float model (the loop applies the config's
    quantization), trained in place on the run's device and returned as ``result.model``. ``teacher``:
    the frozen teacher, required exactly when ``cfg.distill`` is set. Resuming loads the checkpoint
    (weights, optimizer, quantization phase, RNG, data position) into them, so pass the models the run
    started from, built the same way; a student of other tensors is refused (ResumeError).

    resume: ``"auto"`` continues from the newest checkpoint in ``out_dir`` if there is one, a path
    resumes from that checkpoint, None starts afresh (refusing a folder that holds checkpoints
    unless ``overwrite``). ``stop_at_step`` ends the process early after writing a checkpoint there,
    like an interruption (used to test resume, and to train in time-boxed pieces).
    """
    out_dir = Path(out_dir)
    env = init_distributed(device)
    if cfg.precision == "fp16" and not env.device.startswith("cuda"):
        raise TernbenchError("fp16 autocast needs a GPU; on CPU use precision bf16 or fp32")
    _check_models(cfg, student, teacher)
    sources = resolve_sources(cfg.data)  # a pattern matching nothing fails here, before any model is touched

    ckpt_path = _checkpoint_to_resume(out_dir, resume, overwrite, env)
    ckpt = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    if ckpt is not None:
        check_resumable(ckpt, cfg, ckpt_path)
        saved_arch = ckpt.get("arch")
        if saved_arch and student.arch and saved_arch != student.arch:
            raise ResumeError(f"checkpoint {ckpt_path} trained the architecture {saved_arch!r}, the student given "
                              f"is {student.arch!r}: pass the model the run started from (config model "
                              f"{cfg.model!r})")
    start = int(ckpt["step"]) if ckpt else 0

    # The projection's initialization (and anything random in a step) follows the seed; the models'
    # own initialization is the caller's.
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    frozen = Teacher(cfg.distill, teacher, student, env.device) if teacher is not None else None
    projection = frozen.projection() if frozen is not None and cfg.distill.embed_weight > 0 else None
    module = Student(student.model, projection).to(env.device).train()
    phase = quant_phase(cfg, start)
    apply_phase(module.clip, cfg, phase)

    optimizer = torch.optim.AdamW(_param_groups(module, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
    position = 0
    if ckpt is not None:
        check_matches(module, ckpt["model"], ckpt_path,
                      f"Pass the model the run started from (config model {cfg.model!r}).")
        module.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        position = int(ckpt["position"])
    wrapped: nn.Module = module
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(module, device_ids=[env.local_rank] if env.device.startswith("cuda") else None)

    batches = PairBatches(sources, student.transform, cfg.batch_size, cfg.seed, cfg.shuffle_buffer,
                          env.rank, env.world_size, position)
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.json", json.dumps(json.loads(cfg.to_json()), indent=2) + "\n")
    logger = _Logger(out_dir / LOG_FILE, env.is_main, start)
    result = TrainResult(out_dir, None, arch=student.arch, resumed_from=start)
    last_good: Path | None = ckpt_path

    def save(step: int, final: bool) -> Path:
        path = out_dir / FINAL if final else checkpoint_path(out_dir, step)
        if env.is_main:
            state = {"config": cfg.to_json(), "arch": student.arch, "step": step, "position": batches.position,
                     "model": module.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(),
                     "world_size": env.world_size}
            with atomic_path(path) as tmp:
                torch.save(state, tmp)
            for old in sorted(out_dir.glob("checkpoint-*.pt"))[:-KEEP_CHECKPOINTS]:
                old.unlink(missing_ok=True)
        _barrier(env)
        return path

    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and env.is_main),
               desc=f"{cfg.kind} {out_dir.name}", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    end = cfg.steps if stop_at_step is None else min(stop_at_step, cfg.steps)
    step = start
    for step in range(start, end):
        if quant_phase(cfg, step) != phase:
            phase = quant_phase(cfg, step)
            apply_phase(module.clip, cfg, phase)
        t_step = time.perf_counter()
        images, texts, groups = next(batches)
        images = images.to(env.device, non_blocking=True)
        tokens = student.tokenizer(texts).to(env.device)
        with _autocast(cfg, env.device):
            out = wrapped(images, tokens)
            t_out = frozen.encode(images, texts) if frozen is not None else None
        out = tuple(_gather(t, env, with_grad=True) if t.ndim else t for t in out)
        if t_out is not None:
            t_out = tuple(_gather(t, env, with_grad=False) if t.ndim else t for t in t_out)
        terms = compute_losses(cfg, out, t_out, module.proj, groups.to(env.device))
        loss = terms["loss"]
        if not torch.isfinite(loss):
            bar.close()
            where = f"the last good checkpoint is {last_good}" if last_good else (
                "no checkpoint was written yet (set checkpoint_every to keep some)")
            raise TrainingDiverged(f"loss became {loss.item()} at step {step + 1} ({phase} phase); {where}. "
                                   "Lower the learning rate or use fp32")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        with torch.no_grad():
            # Keep the temperature in CLIP's range (logit scale <= 100).
            module.clip.logit_scale.clamp_(0, math.log(100))
        done = step + 1
        record = {"step": done, "phase": phase, "lr": scheduler.get_last_lr()[-1],
                  **{k: round(float(v.detach()), 6) for k, v in terms.items()},
                  "step_s": round(time.perf_counter() - t_step, 4)}
        result.records.append(record)
        if done % cfg.log_every == 0 or done == cfg.steps:
            logger.write(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", phase=phase)
        bar.update(1)
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            last_good = save(done, final=False)
    bar.close()
    step = end
    result.steps_run = end - start
    result.wall_s = time.perf_counter() - t0
    if end == cfg.steps:
        result.final_checkpoint = save(cfg.steps, final=True)
    elif not (cfg.checkpoint_every and end % cfg.checkpoint_every == 0):
        save(end, final=False)
    result.model = module.clip
    return result


def _barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
