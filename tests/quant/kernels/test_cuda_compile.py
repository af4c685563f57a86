"""quant.kernels.cuda_compile: the CUDA kernels compiled for real GPU architectures on a machine
without a GPU (Triton's own ptxas), as the wrappers launch them. Catches what the interpreter
cannot: a kernel that does not compile for sm_80 / sm_90, a K loop that is not pipelined, a GEMM
off the tensor cores, a main loop that spills registers."""

import pytest
import torch

from quant.kernels import cuda
from quant.kernels.cuda_compile import (
    _specialize,
    compile_launch,
    compile_report,
    layer_launches,
    unavailable_reason,
)

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=f"{unavailable_reason()}")


def _launches(m, k, n, norm, activation):
    return dict(layer_launches(m, k, n, norm, activation))


def test_specialization_follows_the_arguments_like_tritons_launcher():
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    backend = make_backend(GPUTarget("cuda", 90, 32))
    gemm = _launches(50, 768, 3072, True, None)["int8 GEMM"]
    signature, constexprs, attrs, options = _specialize(gemm, backend)
    names = gemm.kernel.arg_names
    assert signature["a_ptr"] == "*i8" and signature["c_ptr"] == "*fp16" and signature["M"] == "i32"
    divisible = {names[i] for (i,), a in attrs.items() if a}
    assert {"a_ptr", "w_ptr", "c_ptr", "K", "N", "stride_am"} <= divisible
    assert "M" not in divisible  # 50 tokens: not a multiple of 16
    assert options == {"num_warps": gemm.meta["num_warps"], "num_stages": gemm.meta["num_stages"]}
    assert constexprs[(names.index("BLOCK_M"),)] == gemm.meta["BLOCK_M"]


@pytest.mark.parametrize("what", ["int8 GEMM", "2-bit GEMM, int8"])
def test_large_fused_gemms_compile_for_hopper_pipelined_on_wgmma(what):
    # ViT-L-14 batch 32, the MLP's first layer with GELU in its epilogue: the largest tiles
    launch = _launches(32 * 257, 1024, 4096, True, "gelu")[what]
    r = compile_launch(launch, 90, "L-14 fc1")
    assert r.tensor_cores == "wgmma" and r.pipelined and r.registers <= 255
    assert "ACTIVATION=gelu" in r.config and r.used_by == "L-14 fc1"


def test_gemms_without_epilogue_activation_do_not_spill():
    # the K loop's registers: a spill there would cost every iteration
    launches = _launches(32 * 257, 4096, 1024, False, None)
    for what in ("int8 GEMM", "2-bit GEMM, int8"):
        r = compile_launch(launches[what], 90)
        assert r.local_bytes == 0, (what, r)


def test_ampere_takes_mma_without_spills_and_the_fused_layernorm_compiles():
    launches = dict(layer_launches(32 * 50, 768, 3072, True, "gelu", arch=80))
    gemm = compile_launch(launches["int8 GEMM"], 80)
    # the H100's 128 x 128 tile at 4 warps spills 624 bytes in the K loop on sm_80: 8 warps there
    assert gemm.tensor_cores == "mma" and gemm.pipelined and gemm.local_bytes == 0
    assert "BLOCK_M=128 BLOCK_N=128" in gemm.config and "num_warps=8" in gemm.config
    ln = compile_launch(launches["quantize"], 80)
    assert ln.kernel == "_layernorm_quantize_rows" and ln.local_bytes == 0 and ln.tensor_cores == "none"


def test_the_report_compiles_each_configuration_once():
    layer = list(layer_launches(16, 64, 64, False, None))[:2]  # quantize + int8 GEMM
    twice = [(f"{what} #{i}", launch) for i in (1, 2) for what, launch in layer]
    seen = []
    rows = compile_report(90, twice, progress=seen.append)
    assert [r.kernel for r in rows] == ["_quantize_rows", "_int8_matmul_scaled"] and seen == rows
    assert [r.used_by for r in rows] == ["quantize #1", "int8 GEMM #1"]


def test_launch_builders_are_what_the_wrappers_run():
    # the wrappers build their launch with these functions; a meta launch has the same grid
    q = torch.empty(300, 768, dtype=torch.int8, device="meta")
    out = torch.empty(300, 3072, dtype=torch.float16, device="meta")
    launch = cuda.int8_matmul_launch(q, torch.empty(300, device="meta"), torch.empty(3072, 768, dtype=torch.int8,
                                     device="meta"), torch.empty(3072, device="meta"), None, out)
    bm, bn = launch.meta["BLOCK_M"], launch.meta["BLOCK_N"]
    assert (bm, bn, launch.meta["BLOCK_K"], launch.meta["num_warps"], launch.meta["num_stages"]) == cuda._tiles(300, 3072)
    assert launch.grid == (-(-300 // bm) * -(-3072 // bn),) and launch.meta["HAS_BIAS"] is False


def test_2bit_w_first_form_keeps_the_unpacked_weights_out_of_shared_memory():
    import dataclasses

    launch = _launches(32 * 257, 1024, 4096, True, "gelu")["2-bit GEMM, int8"]
    for w_first, writes in ((False, 1), (True, 0)):
        r = compile_launch(dataclasses.replace(launch, meta={**launch.meta, "W_FIRST": w_first}), 90)
        assert r.tensor_cores == "wgmma" and r.loop_shared_writes == writes, w_first


def test_int8_tma_form_compiles_for_hopper_to_tma_copies_and_wgmma():
    launch = _launches(32 * 257, 1024, 4096, True, "gelu")["int8 GEMM"]
    q, s, t, ws, b, out = (launch.args[i] for i in (0, 2, 1, 3, 4, 5))
    tma = cuda.int8_matmul_launch(q, s, t, ws, b, out, (128, 256, 128, 8, 3), "gelu", 90, "tma")
    assert tma.grid == (cuda.META_PROGRAMS,)  # persistent: one program an SM
    r = compile_launch(tma, 90)
    assert r.kernel == "_int8_matmul_tma" and r.tensor_cores == "wgmma" and r.pipelined
    assert r.loop_shared_writes == 0


@pytest.mark.parametrize("arch", [75, cuda.TRITON_GEMM_MIN_ARCH])
def test_triton_gemms_get_tensor_cores_from_the_arch_the_kernel_choice_asks_for(arch):
    # Before TRITON_GEMM_MIN_ARCH the kernel choice takes cuBLAS(Lt) instead: there Triton's int8 dot
    # does not compile, and its fp16 dot of the 2-bit GEMM runs on the FMA units, spilling
    launches = dict(layer_launches(64, 768, 3072, True, "gelu", arch=arch))
    half = compile_launch(launches["2-bit GEMM, fp16"], arch)
    for what in ("int8 GEMM", "2-bit GEMM, int8"):
        if arch >= cuda.TRITON_GEMM_MIN_ARCH:
            assert compile_launch(launches[what], arch).tensor_cores == "mma"
        else:
            with pytest.raises(Exception):  # noqa: B017 - Triton raises a bare RuntimeError
                compile_launch(launches[what], arch)
    if arch >= cuda.TRITON_GEMM_MIN_ARCH:
        assert half.tensor_cores == "mma" and half.pipelined
    else:
        assert half.tensor_cores == "none" and half.local_bytes > 0


def test_blackwell_takes_tcgen05_and_its_epilogue_does_not_spill_with_the_grown_warps():
    # sm_100 reads the accumulator out of tensor memory into registers for the epilogue: at the H100's
    # 4 warps the 128 x 128 int8 tile with GELU spilled 968 bytes there
    launch = dict(layer_launches(32 * 257, 1024, 4096, True, "gelu", arch=100))["int8 GEMM"]
    assert (launch.meta["BLOCK_M"], launch.meta["BLOCK_N"], launch.meta["num_warps"]) == (128, 128, 8)
    r = compile_launch(launch, 100)
    assert r.tensor_cores == "tcgen05" and r.pipelined and r.local_bytes == 0
