"""W1.58A8 model variants for ``bench.models``: ``q-ffn-a8``, ``q-attn-a8``, ``q-all-a8``.

``-fp16`` forms (``q-all-a8-fp16``...) run everything around the kernels in pure fp16
(``model.half()``, LayerNorms included): the GPU deployment precision, to compare with
``fp16``; the plain forms keep fp32 around the kernels (the CPU path).

Each is the post-training ternary preset of the same name without ``-a8`` (or the
ternary model a packed file holds), run on the fast kernel of the build device with
per-token int8 activations: its own variant with its own accuracy. The plain presets
stay the W1.58A16 (fake-quant float) variants.
"""

from __future__ import annotations

from bench.models import ModelSpecError, register_variant

A8_PRESETS = ("q-ffn", "q-attn", "q-all")


def _a8_builder(preset_name: str, half: bool = False):
    def build(model, ctx):
        from quant import preset, quant_info, quantize_
        from quant.kernels.swap import accelerate_

        info = quant_info(model)
        if info is None:
            quantize_(model, preset(preset_name))
        elif info["config"].get("scope") != preset(preset_name).scope:
            raise ModelSpecError(
                f"{ctx.spec.raw}: the file holds a ternary {info['config'].get('scope')!r} model; "
                f"variant {preset_name}-a8 needs scope {preset(preset_name).scope!r} "
                f"(use q-{info['config'].get('scope')}-a8)")
        if half:
            model.half()
        accelerate_(model, backend="auto", activations="int8")
        return model
    return build


for _name in A8_PRESETS:
    register_variant(f"{_name}-a8", _a8_builder(_name),
                     f"{_name} ternary weights with per-token int8 activations (W1.58A8) on the fast kernel "
                     "of the device, fp32 around it", replace=True)
    register_variant(f"{_name}-a8-fp16", _a8_builder(_name, half=True),
                     f"{_name} W1.58A8 on the device's kernel, pure fp16 around it (GPU)", precision="fp16",
                     replace=True)
