"""W1.58A8 model variants for ``bench.models``: ``q-ffn-a8``, ``q-attn-a8``, ``q-all-a8``.

Each is the post-training ternary preset of the same name without ``-a8`` (or the
ternary model a packed file holds), run on the fast kernel of the build device with
per-token int8 activations: its own variant with its own accuracy. The plain presets
stay the W1.58A16 (fake-quant float) variants.
"""

from __future__ import annotations

from bench.models import ModelSpecError, register_variant

A8_PRESETS = ("q-ffn", "q-attn", "q-all")


def _a8_builder(preset_name: str):
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
        accelerate_(model, backend="auto", activations="int8")
        return model
    return build


for _name in A8_PRESETS:
    register_variant(f"{_name}-a8", _a8_builder(_name),
                     f"{_name} ternary weights with per-token int8 activations (W1.58A8) on the fast kernel "
                     "of the device", replace=True)
