"""The builder of the W1.58A8 model variants ``q-ffn-a8``, ``q-attn-a8``, ``q-all-a8`` and their forms.

``bench.models`` declares them (``KERNEL_PRESETS`` x ``KERNEL_FORMS``); this module is imported
only when one is built. ``-fp16`` forms (``q-all-a8-fp16``...) run everything around the kernels
in pure fp16 (``model.half()``, LayerNorms included): the GPU deployment precision, to compare with
``fp16``; the plain forms keep fp32 around the kernels (the CPU path).

Each is the post-training ternary preset of the same name without the form's suffix (or the
ternary model a packed file holds), run on the fast kernel of the build device with per-token
int8 activations (``a8``) or the weights held 2-bit packed: its own variant with its own
accuracy. The plain presets stay the W1.58A16 (fake-quant float) variants.
"""

from __future__ import annotations

from bench.models import KERNEL_FORMS, ModelSpecError


def build(model, ctx, *, preset_name: str, form: str, half: bool = False):
    """``model`` (float, or ternary from a packed file) as ``preset_name`` on the kernels of ``form``."""
    from quant import preset, quantize_
    from quant.kernels.swap import accelerate_
    from quant.state import quant_state

    activations, backend, _ = KERNEL_FORMS[form]
    state = quant_state(model)
    if state is None:
        quantize_(model, preset(preset_name))
    elif state.config.scope != preset(preset_name).scope:
        raise ModelSpecError(
            f"{ctx.spec.raw}: the file holds a ternary {state.config.scope!r} model; "
            f"variant {preset_name}-{form} needs scope {preset(preset_name).scope!r} "
            f"(use q-{state.config.scope}-{form})")
    if half:
        model.half()
    accelerate_(model, backend=backend, activations=activations)
    return model
