"""Model specs: parse a string that names a CLIP model, and build it ready for inference.

Spec grammar (``@VARIANT`` is optional everywhere, default ``fp32``):

- ``ARCH[:PRETRAINED][@VARIANT]``: an open_clip architecture (``ViT-B-32``), a
  pretrained tag (``openai``, or a tag registered with :func:`register_pretrained`) or
  a local open_clip checkpoint path (``ViT-B-32:/ckpt/epoch_32.pt``). No tag: random
  weights, recorded as ``info["random_weights"] = True``.
- ``hf-hub:ORG/REPO[@VARIANT]``: open_clip's own Hugging Face code path.
- ``PATH.safetensors[@VARIANT]``: a packed ternary checkpoint written by ``quant.save_packed``.

Variants are a registry (:func:`register_variant`) of light descriptors (name, description,
precision) whose builder may be a ``"module:attr"`` imported only when the variant is built:
``fp32``, ``fp16``, ``bf16``, every quant preset (post-training ternary), the presets on the fast
kernels (``bench.kernel_variants``) and ONNX Runtime (``bench.ort``) are declared here as data.
Providers register the rest the first time a name is not found or the variants are listed: the
embedded QAT students, named by their recipes (``bench.train.variants``), and other packages'
``ternbench.variants`` entry points.

Offline: an unknown tag is an error listing the valid ones before any download; a
known tag whose weights are not cached fails at once when the hub is unreachable or
``HF_HUB_OFFLINE`` is set (huggingface_hub would otherwise retry for ~25 s).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quant.errors import ModelSpecError, did_you_mean
from quant.registry import Registry, is_reference, load_reference

PLUGIN_GROUP = "ternbench.variants"  # entry points of other packages: modules that register variants
# A variant that runs the model some other way records how (JSON-able) under this attribute of the
# model it returns; build_model copies it into ``BuiltModel.info["variant_info"]``.
VARIANT_INFO_ATTR = "ternbench_variant_info"
DEFAULT_VARIANT = "fp32"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
PRECISIONS = ("fp32", "fp16", "bf16")


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``source``: ``openclip`` | ``checkpoint`` | ``hf-hub`` | ``packed``."""

    raw: str
    source: str
    arch: str | None = None
    pretrained: str | None = None  # a tag (source "openclip") or None
    path: str | None = None  # checkpoint / packed file
    hub_id: str | None = None
    variant: str = DEFAULT_VARIANT

    @property
    def model_id(self) -> str:
        """A file-system-safe id (results directories): ``ViT-B-32_openai@q-all``."""
        if self.source == "hf-hub":
            base = f"hf-hub_{self.hub_id}"
        elif self.source in ("checkpoint", "packed"):
            stem = Path(self.path).stem
            base = f"{self.arch}_{stem}" if self.source == "checkpoint" else stem
        else:
            base = self.arch + (f"_{self.pretrained}" if self.pretrained else "")
        return re.sub(r"[^A-Za-z0-9._@+-]+", "-", f"{base}@{self.variant}")


@dataclass(frozen=True)
class Variant:
    """A named transformation of a built float model: ``builder(model, ctx, **options) -> model | None``.

    ``builder`` is a callable or its ``"module:attr"``, imported when the variant is first built, so
    declaring, listing and checking variants imports none of their code; ``options`` (JSON-able
    name-value pairs) let one builder serve a family of variants.
    """

    name: str
    builder: Callable[..., Any] | str
    description: str
    precision: str = "fp32"
    options: tuple[tuple[str, Any], ...] = ()

    def build(self, model: Any, ctx: BuildContext) -> Any:
        builder = load_reference(self.builder) if isinstance(self.builder, str) else self.builder
        return builder(model, ctx, **dict(self.options))


@dataclass(frozen=True)
class BuildContext:
    """What a variant builder may need besides the model."""

    spec: ModelSpec
    device: str


@dataclass
class BuiltModel:
    """A model ready for inference: cast inputs to ``precision``; ``info`` is JSON-able."""

    model: Any
    preprocess: Any
    tokenizer: Any
    spec: ModelSpec
    precision: Any  # torch.dtype
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- registries

VARIANTS: Registry[Variant] = Registry("variant", ModelSpecError, describe=lambda v: v.description)
# (arch, tag) -> resolver() returning the checkpoint path
_PRETRAINED: Registry[Callable[[], str | os.PathLike]] = Registry("pretrained tag", ModelSpecError)


def register_variant(name: str, builder: Callable | str, description: str, *, precision: str = "fp32",
                     options: dict[str, Any] | None = None, replace: bool = False) -> Variant:
    """Add a variant. ``builder(model, ctx, **options)`` (a callable, or its ``"module:attr"``,
    imported when the variant is first built) gets the float model (eval, on ``ctx.device``) and
    returns the variant model (or None when it changed ``model`` in place).
    ``precision``: the dtype inputs must be cast to (``fp32`` | ``fp16`` | ``bf16``)."""
    if precision not in PRECISIONS:
        raise ModelSpecError(f"variant {name!r}: unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if isinstance(builder, str) and not is_reference(builder):
        raise ModelSpecError(f"variant {name!r}: builder {builder!r} is neither a callable nor 'package.module:attr'")
    variant = Variant(name, builder, description, precision, tuple(sorted((options or {}).items())))
    VARIANTS.register(name, variant, replace=replace)
    return variant


def register_pretrained(arch: str, tag: str, resolver: Callable[[], str | os.PathLike] | str) -> None:
    """Add a pretrained tag: ``resolver()`` (or its ``"module:attr"``) returns the path of an open_clip
    state-dict checkpoint (safetensors, or .pt read with ``weights_only=True``); called only when built.
    A tag registered twice is an error."""
    _PRETRAINED.register((arch, tag), resolver)


def load_plugins() -> None:
    """Run the variant providers not run yet (they may register pretrained tags too): the embedded
    students and the modules other installed packages declare as entry points of the group
    ``ternbench.variants`` (``[project.entry-points."ternbench.variants"] NAME = "pkg.module"``).
    A lookup of a name not registered yet, or a listing, runs them anyway."""
    VARIANTS.load_providers()


def _entry_point_plugins() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        ep.load()  # the module registers its variants (and tags) on import


def list_variants() -> dict[str, str]:
    return {name: v.description for name, v in VARIANTS.items()}


def _cast_builder(dtype_name: str) -> Callable:
    def build(model, ctx):
        import open_clip
        import torch
        from open_clip.transformer import LayerNorm, LayerNormFp32

        # open_clip's own mixed precision: matmul weights in low precision, LayerNorms kept fp32.
        open_clip.convert_weights_to_lp(model, dtype=getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[dtype_name]))
        # create_model(precision="fp16") builds its LayerNorms as LayerNormFp32 (input cast to fp32);
        # a model built in fp32 has plain LayerNorms, which fail on CUDA with fp16 input and fp32 weights.
        for module in model.modules():
            if type(module) is LayerNorm:
                module.__class__ = LayerNormFp32
        return model
    return build


def _preset_builder(preset_name: str) -> Callable:
    def build(model, ctx):
        from quant import preset, quantize_
        from quant.state import quant_state

        if quant_state(model) is not None:
            raise ModelSpecError(
                f"{ctx.spec.raw}: the model is already quantized ({quant_state(model).config.scope}); "
                f"variant {preset_name!r} needs a float model, use @fp32 / @fp16 / @bf16 on a packed file"
            )
        quantize_(model, preset(preset_name))
        return model
    return build


# The presets run on the fast kernels (built by bench.kernel_variants:build):
# suffix -> (activations, backend, what it is).
KERNEL_PRESETS = ("q-ffn", "q-attn", "q-all")
KERNEL_FORMS = {
    "a8": ("int8", "auto", "ternary weights with per-token int8 activations (W1.58A8) on the device's fast kernel"),
    "a8-2bit": ("int8", "packed", "W1.58A8 with the weights held 2-bit packed (4 trits a byte)"),
    "2bit": ("float", "packed", "W1.58A16 (the fake-quant numerics) with the weights held 2-bit packed"),
}
# The model exported to ONNX and run by ONNX Runtime (built by bench.ort:build_variant): form -> what.
ORT_FORMS = {"fp32": "fp32 graphs", "int8": "int8 dynamic quantization (per-channel QInt8 weights)"}


def _register_builtins() -> None:
    from quant.config import PRESETS

    register_variant("fp32", lambda model, ctx: model, "float32 weights and activations (no change)")
    register_variant("fp16", _cast_builder("fp16"), "float16 weights (open_clip mixed precision)", precision="fp16")
    register_variant("bf16", _cast_builder("bf16"), "bfloat16 weights (open_clip mixed precision)", precision="bf16")
    for name, cfg in PRESETS.items():
        register_variant(name, _preset_builder(name),
                         f"post-training ternary {cfg.scope} weights ({cfg.towers} towers), {cfg.method}")
    for name in KERNEL_PRESETS:
        for suffix, (_, _, what) in KERNEL_FORMS.items():
            for half, around, precision in ((False, "fp32 around it", "fp32"), (True, "pure fp16 around it (GPU)", "fp16")):
                register_variant(f"{name}-{suffix}" + ("-fp16" if half else ""), "bench.kernel_variants:build",
                                 f"{name}: {what}, {around}", precision=precision,
                                 options={"preset_name": name, "form": suffix, "half": half})
    for form, what in ORT_FORMS.items():
        register_variant(f"ort-{form}", "bench.ort:build_variant",
                         f"both towers exported to ONNX and run by ONNX Runtime: {what}", options={"form": form})
    # Variants named by data of their own, registered when a name is not found or all are listed.
    VARIANTS.add_provider("bench.train.variants:register_students")  # the students' recipes
    VARIANTS.add_provider(_entry_point_plugins)
    _PRETRAINED.add_provider(load_plugins)  # the variant providers register tags too


_register_builtins()


# ----------------------------------------------------------------------------- parsing


def _open_clip():
    import open_clip

    from bench.embedded import register

    register()
    return open_clip


def _looks_like_path(s: str) -> bool:
    return os.sep in s or s.startswith(".") or s.lower().endswith(CHECKPOINT_SUFFIXES) or os.path.exists(s)


def valid_tags(arch: str) -> list[str]:
    oc = _open_clip()
    return [t for (a, t) in _PRETRAINED if a == arch] + list(oc.list_pretrained_tags_by_model(arch))


def parse_spec(s: str) -> ModelSpec:
    """Parse a model spec string (see the module docstring); errors list valid choices."""
    if not isinstance(s, str) or not s.strip():
        raise ModelSpecError(f"empty model spec {s!r}; expected ARCH[:PRETRAINED][@VARIANT], "
                             "hf-hub:ORG/REPO, or a packed .safetensors file")
    raw = s = s.strip()
    variant = DEFAULT_VARIANT
    # An existing path may itself contain '@'; otherwise the last '@' starts the variant.
    if "@" in s and not os.path.exists(s):
        s, variant = s.rsplit("@", 1)
        if variant not in VARIANTS:
            raise ModelSpecError(f"{raw}: unknown variant {variant!r}{did_you_mean(variant, VARIANTS)}; "
                                 f"valid: {', '.join(VARIANTS)}")
    if s.startswith("hf-hub:"):
        hub_id = s[len("hf-hub:"):]
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", hub_id):
            raise ModelSpecError(f"{raw}: expected hf-hub:ORG/REPO, got {s!r}")
        return ModelSpec(raw, "hf-hub", hub_id=hub_id, variant=variant)

    oc = _open_clip()
    arch, _, pretrained = s.partition(":")
    if arch not in oc.list_models():
        if _looks_like_path(s):
            return _parse_file(raw, s, variant)
        names = oc.list_models()
        raise ModelSpecError(f"{raw}: unknown open_clip architecture {arch!r}{did_you_mean(arch, names)}; "
                             f"valid ({len(names)}): {', '.join(names)}")
    if not pretrained:
        return ModelSpec(raw, "openclip", arch=arch, variant=variant)
    if _looks_like_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ModelSpecError(f"{raw}: checkpoint file {str(path)!r} does not exist")
        from quant.checkpoint import is_packed_file

        if is_packed_file(path):
            raise ModelSpecError(f"{raw}: {str(path)!r} is a packed ternary checkpoint, which knows its own "
                                 f"architecture: give the path alone ({path}[@VARIANT])")
        return ModelSpec(raw, "checkpoint", arch=arch, path=str(path.resolve()), variant=variant)
    tags = valid_tags(arch)
    tag = pretrained if (arch, pretrained) in _PRETRAINED else pretrained.lower().replace("-", "_")
    if tag not in tags:
        raise ModelSpecError(
            f"{raw}: unknown pretrained tag {pretrained!r} for {arch}{did_you_mean(pretrained, tags)}; "
            f"valid: {', '.join(tags) or 'none'} (or {arch} alone for random weights, "
            f"or {arch}:/path/to/checkpoint)"
        )
    return ModelSpec(raw, "openclip", arch=arch, pretrained=tag, variant=variant)


def _parse_file(raw: str, s: str, variant: str) -> ModelSpec:
    path = Path(s).expanduser()
    if not path.is_file():
        raise ModelSpecError(f"{raw}: file {str(path)!r} does not exist (expected a packed ternary "
                             ".safetensors, or ARCH:/path/to/open_clip_checkpoint)")
    from quant.checkpoint import is_packed_file

    if is_packed_file(path):  # by content: a packed file renamed to .bin is still one
        return ModelSpec(raw, "packed", path=str(path.resolve()), variant=variant)
    raise ModelSpecError(
        f"{raw}: {str(path)!r} is not a packed ternary checkpoint; for an open_clip state dict "
        f"say which architecture it is: ARCH:{s} (e.g. ViT-B-32:{s})"
    )


# ----------------------------------------------------------------------------- offline


def _is_true(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """True when downloads are off: ``HF_HUB_OFFLINE`` is set, or the hub is unreachable.

    When the hub is unreachable we switch huggingface_hub to offline mode too, so cached
    files load at once instead of after its ~25 s of retries.
    """
    from bench.datasets.loading import hub_unreachable_reason

    if not _is_true(os.environ.get("HF_HUB_OFFLINE")) and hub_unreachable_reason() is None:
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass
    return True


def _cached_tag_file(cfg: dict[str, Any]) -> tuple[str | None, list[str]]:
    """(path of the cached weights or None, where we looked)."""
    looked = []
    if cfg.get("file"):
        return (cfg["file"] if os.path.isfile(cfg["file"]) else None), [cfg["file"]]
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])
        names = [filename] if filename else []
        names = [n[:-4] + ".safetensors" for n in names if n.endswith((".bin", ".pth"))] + names
        names += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"] if not filename else []
        for name in names:
            looked.append(f"hf-hub {repo}/{name}")
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str):
                return hit, looked
    if cfg.get("url"):
        target = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        looked.append(target)
        if os.path.isfile(target):
            return target, looked
    return None, looked


def resolve_pretrained(arch: str, tag: str) -> str:
    """Local path of the weights of ``arch:tag``; downloads only when online."""
    if (arch, tag) in _PRETRAINED:
        path = Path(_PRETRAINED[(arch, tag)]()).expanduser()
        if not path.is_file():
            raise ModelSpecError(f"{arch}:{tag}: the registered resolver returned {str(path)!r}, which is not a file")
        return str(path)
    oc = _open_clip()
    cfg = oc.get_pretrained_cfg(arch, tag)
    hit, looked = _cached_tag_file(cfg)
    if hit:
        return hit
    if offline():
        raise ModelSpecError(
            f"{arch}:{tag}: weights are not cached (looked in: {'; '.join(looked)}) and downloads are off "
            f"(no network or HF_HUB_OFFLINE=1). Download them once with network, or pass a local "
            f"checkpoint: {arch}:/path/to/weights.safetensors, or use {arch} for random weights"
        )
    try:
        return oc.download_pretrained(cfg)
    except Exception as e:  # network errors of many kinds; the user needs the reason, not the type
        raise ModelSpecError(f"{arch}:{tag}: downloading the weights failed: {e}") from e


# ----------------------------------------------------------------------------- building


@functools.cache
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def _tag_preprocess(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}


def _build_openclip(spec: ModelSpec) -> tuple[Any, str | None, str]:
    """(model, checkpoint path or None, tokenizer name); fp32 on CPU."""
    oc = _open_clip()
    kwargs: dict[str, Any] = {}
    checkpoint = None
    if spec.source == "checkpoint":
        checkpoint = spec.path
    elif spec.pretrained:
        checkpoint = resolve_pretrained(spec.arch, spec.pretrained)
        tag_cfg = oc.get_pretrained_cfg(spec.arch, spec.pretrained)
        # We hand open_clip the file, so pass on what the tag would have set: preprocessing
        # and QuickGELU (the OpenAI weights need it; without it every output is wrong).
        kwargs["force_preprocess_cfg"] = _tag_preprocess(tag_cfg)
        kwargs["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
    try:
        model = oc.create_model(spec.arch, pretrained=checkpoint, weights_only=True, **kwargs)
    except Exception as e:
        if checkpoint is None:
            raise
        # weights_only=True refuses pickled objects; a wrong architecture gives size mismatches.
        raise ModelSpecError(f"{spec.raw}: cannot load open_clip checkpoint {checkpoint!r} into {spec.arch} "
                             f"(read with weights_only=True): {str(e).splitlines()[0][:500]}") from e
    from quant.origin import record_origin

    cfg = oc.get_model_config(spec.arch)
    if kwargs.get("force_quick_gelu"):
        cfg["quick_gelu"] = True
    record_origin(model, spec.arch, cfg, spec=spec.raw, random_weights=checkpoint is None)
    return model, checkpoint, spec.arch


def _build_hub(spec: ModelSpec) -> tuple[Any, str | None, str]:
    oc = _open_clip()
    name = f"hf-hub:{spec.hub_id}"
    if offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(spec.hub_id, "open_clip_config.json"), str):
            raise ModelSpecError(f"{spec.raw}: {spec.hub_id} is not in the Hugging Face cache and downloads "
                                 "are off (no network or HF_HUB_OFFLINE=1); download it once with network")
    try:
        model = oc.create_model(name, weights_only=True)
    except Exception as e:
        raise ModelSpecError(f"{spec.raw}: open_clip could not load {name}: {e}") from e
    from quant.origin import record_origin

    record_origin(model, name, oc.get_model_config(name), spec=spec.raw, random_weights=False, tokenizer=name)
    return model, None, name


def _build_packed(spec: ModelSpec) -> tuple[Any, str | None, str]:
    from quant.checkpoint import load_packed
    from quant.state import recorded_origin

    model = load_packed(spec.path)
    return model, spec.path, recorded_origin(model).tokenizer


SOURCE_BUILDERS: dict[str, Callable[[ModelSpec], tuple[Any, str | None, str]]] = {
    "openclip": _build_openclip,
    "checkpoint": _build_openclip,
    "hf-hub": _build_hub,
    "packed": _build_packed,
}


def build_model(spec: str | ModelSpec, device: str = "cpu") -> BuiltModel:
    """Build the model a spec names: eval mode, on ``device``, variant applied."""
    import open_clip
    import torch

    spec = parse_spec(spec) if isinstance(spec, str) else spec
    variant = VARIANTS[spec.variant]
    model, checkpoint, tokenizer_name = SOURCE_BUILDERS[spec.source](spec)
    from quant.state import quant_state, recorded_origin, set_origin

    origin = recorded_origin(model)
    model = model.to(device).eval()
    built = variant.build(model, BuildContext(spec, str(device)))
    model = (model if built is None else built).to(device).eval()
    if recorded_origin(model) is None:  # a variant that built a new model object
        set_origin(model, origin)
    checkpoint = recorded_origin(model).checkpoint or checkpoint  # a variant's own file (qat-*)

    from open_clip.transform import PreprocessCfg, image_transform_v2

    pp = PreprocessCfg(**model.visual.preprocess_cfg)
    preprocess = image_transform_v2(pp, is_train=False)
    tokenizer = open_clip.get_tokenizer(tokenizer_name)
    qs = quant_state(model)
    info = {
        "spec": spec.raw,
        "model_id": spec.model_id,
        "source": spec.source,
        "arch": origin.arch,
        "pretrained": spec.pretrained,
        "source_spec": origin.spec,
        "variant": spec.variant,
        "precision": variant.precision,
        "quant_config": qs.config.to_dict() if qs else None,
        "random_weights": origin.random_weights,
        "checkpoint": checkpoint,
        "checkpoint_sha256": file_sha256(checkpoint) if checkpoint else None,
    }
    if VARIANT_INFO_ATTR in model.__dict__:
        info["variant_info"] = model.__dict__[VARIANT_INFO_ATTR]
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[variant.precision]
    return BuiltModel(model, preprocess, tokenizer, spec, dtype, info)
