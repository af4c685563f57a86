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

KERNEL_PRESETS = ("q-ffn", "q-attn", "q-all")


# suffix -> (activations, backend, what it is)
KERNEL_FORMS = {
    "a8": ("int8", "auto", "ternary weights with per-token int8 activations (W1.58A8) on the device's fast kernel"),
    "a8-2bit": ("int8", "packed", "W1.58A8 with the weights held 2-bit packed (4 trits a byte)"),
    "2bit": ("float", "packed", "W1.58A16 (the fake-quant numerics) with the weights held 2-bit packed"),
}


def _kernel_builder(preset_name: str, suffix: str, half: bool = False):
    activations, backend, _ = KERNEL_FORMS[suffix]

    def build(model, ctx):
        from quant import preset, quantize_
        from quant.kernels.swap import accelerate_
        from quant.state import quant_state

        state = quant_state(model)
        if state is None:
            quantize_(model, preset(preset_name))
        elif state.config.scope != preset(preset_name).scope:
            raise ModelSpecError(
                f"{ctx.spec.raw}: the file holds a ternary {state.config.scope!r} model; "
                f"variant {preset_name}-{suffix} needs scope {preset(preset_name).scope!r} "
                f"(use q-{state.config.scope}-{suffix})")
        if half:
            model.half()
        accelerate_(model, backend=backend, activations=activations)
        return model
    return build


for _name in KERNEL_PRESETS:
    for _suffix, (_, _, _what) in KERNEL_FORMS.items():
        register_variant(f"{_name}-{_suffix}", _kernel_builder(_name, _suffix),
                         f"{_name}: {_what}, fp32 around it", replace=True)
        register_variant(f"{_name}-{_suffix}-fp16", _kernel_builder(_name, _suffix, half=True),
                         f"{_name}: {_what}, pure fp16 around it (GPU)", precision="fp16", replace=True)
