"""CUDA kernels against the references.

On a GPU everything runs. Without one, the Triton kernels themselves still run under
Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``, set by
``test_triton_interpreted.py`` in a subprocess) on the small shapes; tests of the kernel
classes and models need a real CUDA device and skip.
"""

import copy
import os

import pytest
import torch
import torch.nn.functional as F

from quant.kernels.reference import (
    ACTIVATION_FNS,
    int_matmul_reference,
    quantize_per_token,
    ternary_linear_a8_reference,
    ternary_linear_a16_reference,
)
from quant.packing import pack

HAVE_CUDA = torch.cuda.is_available()
INTERPRETED = not HAVE_CUDA and os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cuda" if HAVE_CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")
needs_triton = pytest.mark.skipif(not (HAVE_CUDA or INTERPRETED), reason="needs a CUDA device or TRITON_INTERPRET=1")

# Few tokens (batch 1), odd sizes everywhere; on a GPU also a ViT-B block at batch 4 x 50
# tokens and a large-M tile (too slow for the interpreter).
SMALL = [(1, 64, 32), (3, 40, 24), (17, 132, 70), (70, 256, 129)]
SHAPES = SMALL + ([(200, 768, 3072), (301, 260, 129), (1600, 512, 256)] if HAVE_CUDA else [])


def _case(m, k, n, seed, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * torch.rand(m, 1, generator=g) * 10
    trits = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
    w_scale, bias = torch.rand(n, generator=g) + 0.01, torch.randn(n, generator=g)
    return x.to(device), trits.to(device), w_scale.to(device), bias.to(device)


def _triton():
    from quant.kernels import cuda

    if not cuda.HAVE_TRITON:
        pytest.skip("no Triton")
    return cuda


def _kernels():
    from quant.kernels import cuda

    kernels = [cuda.IntMMKernel]
    if cuda.HAVE_TRITON:
        kernels.append(cuda.TritonInt8Kernel)
    return kernels


@needs_triton
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_triton_quantization_matches_reference(m, k, n):
    cuda = _triton()
    x, *_ = _case(m, k, n, seed=m)
    codes, scale = cuda.quantize_per_token_cuda(x)
    ref_codes, ref_scale = quantize_per_token(x)
    torch.testing.assert_close(scale, ref_scale.squeeze(1), rtol=1e-6, atol=0)
    diff = (codes.int() - ref_codes.int()).abs()
    # Triton's fp32 division may differ by one ulp from torch's at an exact rounding tie.
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-4


@needs_triton
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_triton_gemm_integer_part_is_exact(m, k, n):
    cuda = _triton()
    x, trits, _, _ = _case(m, k, n, seed=k)
    codes, _ = quantize_per_token(x)
    ones_m, ones_n = torch.ones(m, device=DEVICE), torch.ones(n, device=DEVICE)
    acc = cuda.int8_matmul_scaled(codes, ones_m, trits, ones_n, None, torch.float32)
    # |acc| <= 127 * K < 2**24: exact in fp32.
    ref = int_matmul_reference(codes.cpu(), trits.cpu()).double()
    assert torch.equal(acc.double().cpu(), ref)
    if k % 4 == 0:  # the 2-bit GEMM: the same integers from the packed trits
        acc2 = cuda.ternary2bit_matmul_scaled(codes, ones_m, pack(trits, "2bit"), n, ones_n, None, torch.float32)
        assert torch.equal(acc2.double().cpu(), ref)


@needs_triton
@pytest.mark.parametrize("m,k,n", [s for s in SHAPES if s[1] % 4 == 0])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_2bit_gemm_float_activations_match_reference(m, k, n, dtype):
    cuda = _triton()
    if INTERPRETED and dtype == torch.bfloat16:
        pytest.skip("Triton's interpreter casts to bfloat16 wrongly (a 16x16 int8 -> bf16 dot is off by 1e10)")
    x, trits, w_scale, bias = _case(m, k, n, seed=n + 1)
    x = x.to(dtype)
    out = cuda.ternary2bit_matmul_scaled(x, None, pack(trits, "2bit"), n, w_scale, bias, dtype)
    ref = ternary_linear_a16_reference(x.double(), trits, w_scale, bias)
    assert out.dtype == dtype and out.shape == (m, n)
    # fp32 accumulation of exact products, one rounding to the half type at the end.
    tol = 4e-3 if dtype == torch.float16 else 1.6e-2
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())


def _layernorm(k, seed, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    ln = torch.nn.LayerNorm(k)
    with torch.no_grad():
        ln.weight.copy_(torch.rand(k, generator=g) + 0.5)
        ln.bias.copy_(torch.randn(k, generator=g) * 0.1)
    return ln.to(device)


@needs_triton
@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_layernorm_quantization_matches_reference(m, k, n, dtype):
    """LayerNorm and per-token quantization in one pass give the codes of the two ops one by one."""
    cuda = _triton()
    x, *_ = _case(m, k, n, seed=m + 7)
    x = (x + 3.0).to(dtype)  # an offset the mean has to remove
    ln = _layernorm(k, seed=k).to(dtype)
    assert cuda.norm_fusable(ln, k)
    codes, scale = cuda.quantize_per_token_cuda(x, ln)
    with torch.no_grad():
        ref_codes, ref_scale = quantize_per_token(ln(x))
    # Mean and variance summed in another order: the normalized row differs in the last bits
    # (fp32), so the scale within 1e-5 and a code by one, rarely; in fp16 the rounding of the
    # normalized row absorbs most of it.
    torch.testing.assert_close(scale, ref_scale.squeeze(1), rtol=1e-5 if dtype == torch.float32 else 2e-3, atol=0)
    diff = (codes.int() - ref_codes.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 2e-2, (diff > 0).float().mean()
    assert not torch.equal(codes, cuda.quantize_per_token_cuda(x)[0])  # the norm did run


@needs_triton
@pytest.mark.parametrize("m,k,n", [(3, 40, 24), (70, 256, 129)])
def test_triton_2bit_w_first_form_equals_the_default_form(m, k, n):
    cuda = _triton()
    x, trits, w_scale, bias = _case(m, k, n, seed=m + 11)
    codes, x_scale = quantize_per_token(x)
    x_scale = x_scale.squeeze(1)
    packed = pack(trits.cpu(), "2bit").to(DEVICE)
    for a, sa, dtype in ((codes, x_scale, torch.float32), (x.half(), None, torch.float16)):
        default = cuda.ternary2bit_matmul_scaled(a, sa, packed, n, w_scale, bias, dtype, activation="gelu",
                                                 w_first=False)
        first = cuda.ternary2bit_matmul_scaled(a, sa, packed, n, w_scale, bias, dtype, activation="gelu",
                                               w_first=True)
        if a.dtype == torch.int8:  # the same integers, scaled in the same order
            assert torch.equal(first, default)
        else:
            torch.testing.assert_close(first.float(), default.float(), rtol=2e-3, atol=2e-3)


@needs_triton
@pytest.mark.parametrize("m,k,n", [(3, 48, 24), (70, 256, 129), (17, 144, 70)])
@pytest.mark.parametrize("tiles", [(16, 32, 32, 4, 2), (32, 64, 64, 4, 3)])
def test_triton_tma_form_equals_the_tiles_form(m, k, n, tiles):
    """The persistent TMA GEMM: the same integers and epilogue, each program looping over several tiles
    (under the interpreter 2 programs; K past the last full block read as zeros)."""
    cuda = _triton()
    x, trits, w_scale, bias = _case(m, k, n, seed=m + 13)
    codes, x_scale = quantize_per_token(x)
    x_scale = x_scale.squeeze(1)
    assert cuda.tma_fits(codes, trits, arch=90) and not cuda.tma_fits(codes, trits, arch=80)
    assert cuda.int8_matmul_launch(codes, x_scale, trits, w_scale, bias, torch.empty(m, n, device=DEVICE),
                                   tiles, form="tma", programs=2).grid == (min(2, -(-m // tiles[0]) * -(-n // tiles[1])),)
    for activation in (None, "gelu"):
        by_tiles = cuda.int8_matmul_scaled(codes, x_scale, trits, w_scale, bias, torch.float32, tiles=tiles,
                                           activation=activation, form="tiles")
        by_tma = cuda.int8_matmul_scaled(codes, x_scale, trits, w_scale, bias, torch.float32, tiles=tiles,
                                         activation=activation, form="tma")
        assert torch.equal(by_tma, by_tiles)


@needs_triton
def test_triton_tuned_gemms_time_the_candidates_once_and_keep_the_fastest(monkeypatch, tmp_path):
    """With tuning on, the first call of a shape times every candidate, runs the fastest and caches it;
    the next call reads the cache. Outputs equal the untuned ones. (A fake clock: the real one needs CUDA.)"""
    cuda = _triton()
    from quant.kernels import cuda_tune

    cache = cuda_tune.TuneCache(tmp_path / "tune.json")
    monkeypatch.setattr(cuda_tune, "enabled", lambda device: True)
    monkeypatch.setattr(cuda_tune, "cache_for", lambda device: cache)
    timed = []

    def fake_clock(launch):  # the TMA form with 64-row tiles is "fastest"; others by their row tile
        timed.append(launch)
        launch()
        return 1.0 if (launch.kernel is cuda._int8_matmul_tma and launch.meta["BLOCK_M"] == 64) else 9.0 - launch.meta["BLOCK_M"] / 64

    monkeypatch.setattr(cuda_tune, "time_launch", fake_clock)
    m, k, n = 70, 256, 129
    x, trits, w_scale, bias = _case(m, k, n, seed=5)
    codes, x_scale = quantize_per_token(x)
    x_scale = x_scale.squeeze(1)
    candidates = cuda.int8_candidates(codes, trits, arch=90)
    assert candidates[0] == cuda_tune.Candidate("tiles", cuda._tiles(m, n)) and len(set(candidates)) > 4
    assert {c.form for c in candidates} == {"tiles", "tma"}
    assert all(c.tiles[0] <= 128 for c in candidates)  # no 256-row tile for 70 rows
    tuned = cuda.int8_matmul_scaled(codes, x_scale, trits, w_scale, bias, torch.float32, activation="gelu")
    assert len(timed) == len(set(candidates))
    plain = cuda.int8_matmul_scaled(codes, x_scale, trits, w_scale, bias, torch.float32, activation="gelu",
                                    form="tiles")
    assert torch.equal(tuned, plain)
    key = f"int8 {m}x{k}x{n} gelu bias=True torch.float32"
    assert cache.get(key) == cuda_tune.Candidate("tma", (64, 64, 128, 4, 4))
    again = cuda.int8_matmul_scaled(codes, x_scale, trits, w_scale, bias, torch.float32, activation="gelu")
    assert len(timed) == len(set(candidates)) and torch.equal(again, plain)  # from the cache: no timing
    # the 2-bit GEMM's two forms are candidates too
    packed = pack(trits.cpu(), "2bit").to(DEVICE)
    two_bit = cuda.ternary2bit_matmul_scaled(codes, x_scale, packed, n, w_scale, bias, torch.float32)
    # the same integers, the two scales multiplied in another order: the last bit
    torch.testing.assert_close(two_bit, cuda.int8_matmul_scaled(
        codes, x_scale, trits, w_scale, bias, torch.float32, form="tiles"), rtol=1e-6, atol=1e-6)
    forms = {launch.meta["W_FIRST"] for launch in timed if launch.kernel is cuda._ternary2bit_matmul_scaled}
    assert forms == {False, True}


@pytest.mark.parametrize("arch", [80, 86, 100, 120])
def test_tiles_without_wgmma_give_a_thread_at_most_64_accumulators_up_to_8_warps(arch):
    from quant.kernels import cuda

    for rules in (cuda.TILE_RULES, cuda.TILE_RULES_2BIT_A8, cuda.TILE_RULES_2BIT_A16):
        for m, n in ((50, 768), (400, 3072), (1600, 768), (8224, 4096)):
            bm, bn, bk, warps, stages = cuda._tiles(m, n, rules, arch=arch)
            h100 = cuda._tiles(m, n, rules, arch=90)
            assert (bm, bn, bk, stages) == (h100[0], h100[1], h100[2], h100[4]) and warps >= h100[3]
            assert (bm * bn // (32 * warps) <= cuda.REGISTER_ACC_PER_THREAD
                    or warps == cuda.REGISTER_ACC_MAX_WARPS)
    assert cuda._tiles(8224, 4096, arch=90)[3] == 4 and cuda._tiles(8224, 4096, arch=arch)[3] == 8


@pytest.mark.parametrize("arch", [75, 80, 90])
def test_gpus_before_ampere_get_cublas_instead_of_the_triton_gemms(monkeypatch, arch):
    # No GPU here: the device's compute capability is what the choice reads, so that is patched;
    # test_cuda_compile.py holds TRITON_GEMM_MIN_ARCH to what Triton compiles.
    from quant.kernels import base

    cuda = _triton()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "_cuda_arch", lambda index: arch)
    monkeypatch.setattr(cuda, "_int_mm_reason", lambda device: None)
    gpu, old = torch.device("cuda", 0), arch < cuda.TRITON_GEMM_MIN_ARCH
    why = f"Triton's GEMMs need tensor cores of compute capability 8.0 or newer (Ampere); this GPU is sm_{arch}"
    for backend, activations, fast, fallback in (("auto", "int8", cuda.TritonInt8Kernel, cuda.IntMMKernel),
                                                  ("packed", "int8", cuda.TritonPacked2bitKernel, base.Packed2bitKernel),
                                                  ("packed", "float", cuda.TritonPacked2bitKernel, base.Packed2bitKernel)):
        choice, reasons = base.kernel_choice(backend, gpu, activations)
        assert (choice, reasons) == ((fallback, [why]) if old else (fast, [])), (backend, activations)
    if old:  # and where cuBLASLt has no int8 GEMM either: the reference, saying why
        monkeypatch.setattr(cuda, "_int_mm_reason", lambda device: "torch._int_mm fails on cuda:0: no kernel")
        with pytest.warns(base.KernelUnavailableWarning, match=r"sm_75; torch._int_mm fails on cuda:0"):
            assert base.select_kernel("cuda", gpu, "int8") is base.Kernel


def test_the_int_mm_probe_runs_a_real_product():
    from quant.kernels import cuda

    assert cuda._int_mm_reason(torch.device("cpu")) is None  # torch._int_mm runs on the CPU too
    assert cuda._indexed(torch.device("cpu")) == torch.device("cpu")


@needs_triton
def test_triton_gelu_epilogue_is_within_its_error_bound_of_the_exact_gelu():
    # a 1 x 1 product of code 1 and trit 1 leaves the token scale: the epilogue sees exactly x
    cuda = _triton()
    x = torch.linspace(-12, 12, 24_001, dtype=torch.float64)
    x = torch.cat([x, torch.tensor([0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0], dtype=torch.float64)])
    codes = torch.ones(len(x), 1, dtype=torch.int8, device=DEVICE)
    trits = torch.ones(1, 1, dtype=torch.int8, device=DEVICE)
    one = torch.ones(1, device=DEVICE)
    plain = cuda.int8_matmul_scaled(codes, x.float().to(DEVICE), trits, one, None, torch.float32)
    assert torch.equal(plain[:, 0].cpu(), x.float())
    fused = cuda.int8_matmul_scaled(codes, x.float().to(DEVICE), trits, one, None, torch.float32,
                                    activation="gelu")[:, 0].cpu().double()
    exact = F.gelu(x.float().double())
    # Abramowitz & Stegun 7.1.26 in fp32: measured 4.2e-7 at most (torch's own fp32 GELU: 3.8e-7)
    err = (fused - exact).abs()
    assert err.max() <= 5e-7 and torch.isfinite(fused).all(), (err.max(), x[err.argmax()])
    assert fused[x > 6].equal(x[x > 6].float().double())  # GELU(x) = x in fp32 there


@needs_triton
@pytest.mark.parametrize("m,k,n", SMALL)
@pytest.mark.parametrize("activation", sorted(ACTIVATION_FNS))
def test_triton_gemm_epilogue_activation_matches_separate_op(m, k, n, activation):
    cuda = _triton()
    x, trits, w_scale, bias = _case(m, k, n, seed=n + 3)
    codes, x_scale = quantize_per_token(x)
    x_scale = x_scale.squeeze(1)
    fn = ACTIVATION_FNS[activation]
    plain = cuda.int8_matmul_scaled(codes, x_scale, trits, w_scale, bias, torch.float32)
    fused = cuda.int8_matmul_scaled(codes, x_scale, trits, w_scale, bias, torch.float32, activation=activation)
    tol = 1e-5 * plain.abs().max().item()
    torch.testing.assert_close(fused, fn(plain), rtol=1e-5, atol=tol)
    if k % 4 == 0:  # the 2-bit GEMM's epilogue: int8 and half activations
        packed = pack(trits, "2bit")
        fused2 = cuda.ternary2bit_matmul_scaled(codes, x_scale, packed, n, w_scale, bias, torch.float32,
                                                activation=activation)
        torch.testing.assert_close(fused2, fn(plain), rtol=1e-5, atol=tol)
        xh = x.half()
        plain_h = cuda.ternary2bit_matmul_scaled(xh, None, packed, n, w_scale, bias, torch.float32)
        fused_h = cuda.ternary2bit_matmul_scaled(xh, None, packed, n, w_scale, bias, torch.float16,
                                                 activation=activation)
        torch.testing.assert_close(fused_h.float(), fn(plain_h), rtol=2e-3, atol=2e-3 * plain_h.abs().max().item())
    with pytest.raises(ValueError, match="valid: gelu"):
        cuda.int8_matmul_scaled(codes, x_scale, trits, w_scale, bias, torch.float32, activation="relu")


@needs_cuda
@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernels_match_reference(m, k, n, dtype):
    x, trits, w_scale, bias = _case(m, k, n, seed=n)
    x = x.to(dtype)
    ref = ternary_linear_a8_reference(x.float(), trits, w_scale, bias)
    _, x_scale = quantize_per_token(x)
    # fp rounding of the scales, plus one activation step (a code may differ by one at a
    # rounding tie, see above) on a handful of elements a row.
    step = 4 * (x_scale.float() * w_scale.max()).max().item()
    rtol = 1e-5 if dtype == torch.float32 else 2e-3
    for cls in _kernels():
        out = cls(trits, w_scale, "int8").linear(x, bias)
        assert out.dtype == dtype and out.shape == (m, n)
        torch.testing.assert_close(out.float(), ref, rtol=rtol, atol=rtol * ref.abs().max().item() + step,
                                   msg=cls.name)
        assert torch.equal(cls(trits, w_scale, "int8").trits(), trits)


@needs_cuda
@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("activations,dtype", [("int8", torch.float32), ("int8", torch.float16),
                                               ("float", torch.float16), ("float", torch.float32)])
def test_packed_backend_on_cuda_matches_reference(m, k, n, activations, dtype):
    from quant.kernels.base import select_kernel

    cls = select_kernel("packed", "cuda", activations)
    assert cls.name == "cuda-2bit"
    x, trits, w_scale, bias = _case(m, k, n, seed=m + n)
    x = x.to(dtype)
    kernel = cls(trits, w_scale, activations)
    out = kernel.linear(x, bias)
    assert out.dtype == dtype and out.shape == (m, n)
    assert torch.equal(kernel.trits(), trits) and kernel.nbytes() == -(-n * k // 4) + 4 * n
    if activations == "int8":
        ref = ternary_linear_a8_reference(x.float(), trits, w_scale, bias)
        _, x_scale = quantize_per_token(x)
        step = 4 * (x_scale.float() * w_scale.max()).max().item()  # one code off at a tie, see above
        rtol = 1e-5 if dtype == torch.float32 else 2e-3
        torch.testing.assert_close(out.float(), ref, rtol=rtol, atol=rtol * ref.abs().max().item() + step)
    else:
        ref = ternary_linear_a16_reference(x.double(), trits, w_scale, bias)
        tol = 1e-5 if dtype == torch.float32 else 4e-3
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())


@needs_cuda
def test_accelerated_model_on_cuda_matches_cpu_and_fake_quant(tiny_model, tiny_inputs):
    from quant import preset, quantize_
    from quant.kernels import accelerate_

    images, tokens = tiny_inputs
    quantize_(tiny_model, preset("q-all"))
    fake = copy.deepcopy(tiny_model).cuda()
    cpu_a8 = copy.deepcopy(tiny_model)
    accelerate_(cpu_a8)
    gpu_a8 = copy.deepcopy(tiny_model).cuda()
    summary = accelerate_(gpu_a8)
    assert summary["kernels"] and all(k.startswith("cuda") for k in summary["kernels"])
    with torch.no_grad():
        for enc, inp in (("encode_image", images), ("encode_text", tokens)):
            g = getattr(gpu_a8, enc)(inp.cuda()).cpu()
            c = getattr(cpu_a8, enc)(inp)
            f = getattr(fake, enc)(inp.cuda()).cpu()
            assert F.cosine_similarity(g, c).min() > 0.9999
            assert F.cosine_similarity(g, f).min() > 0.99


@needs_cuda
def test_moving_an_accelerated_model_re_prepares_kernels(tiny_model, tiny_inputs):
    from quant import preset, quantize_
    from quant.kernels import TernaryLinear, accelerate_

    quantize_(tiny_model, preset("q-ffn"))
    accelerate_(tiny_model)  # CPU kernels
    tiny_model.cuda()
    kernels = {m.kernel.name for m in tiny_model.modules() if isinstance(m, TernaryLinear)}
    assert all(k.startswith("cuda") for k in kernels), kernels
    with torch.no_grad():
        assert torch.isfinite(tiny_model.encode_image(tiny_inputs[0].cuda())).all()


@needs_triton
@pytest.mark.parametrize("backend,kernel", [("cuda", "cuda-triton"), ("packed", "cuda-2bit")])
def test_triton_kernel_classes_run_a_whole_fused_model(tiny_model, tiny_inputs, backend, kernel):
    """The Triton kernel classes in a whole model with its blocks' LayerNorms and GELUs fused
    (the interpreter runs them on CPU tensors): close to the reference's unfused model."""
    from quant import preset, quantize_
    from quant.kernels import accelerate_

    images, tokens = (t[:1] for t in tiny_inputs) if INTERPRETED else tiny_inputs  # the interpreter is slow
    quantize_(tiny_model, preset("q-all"))
    model = tiny_model.to(DEVICE)
    ref = copy.deepcopy(model)
    accelerate_(ref, backend="reference", fuse=False)
    summary = accelerate_(model, backend=backend)
    blocks = len(model.visual.transformer.resblocks) + len(model.transformer.resblocks)
    assert summary["kernels"] == [kernel] and summary["fused_ops"] == 3 * blocks
    with torch.no_grad():
        for enc, inp in (("encode_image", images), ("encode_text", tokens)):
            got, want = (getattr(m, enc)(inp.to(DEVICE)).cpu() for m in (model, ref))
            # Per layer the reference's integers; fp32 scales against fp64 and a LayerNorm summed
            # in another order can move a code by one at a rounding tie (see test_swap.py).
            assert F.cosine_similarity(got, want).min() > 0.9999, enc


@needs_triton
@pytest.mark.parametrize("cls_name,activations", [("TritonInt8Kernel", "int8"), ("TritonPacked2bitKernel", "int8"),
                                                  ("TritonPacked2bitKernel", "float")])
def test_triton_kernel_classes_pass_the_self_check(cls_name, activations):
    """What `ternbench kernels --check` runs on a GPU, fused LayerNorm + GELU included."""
    from quant.kernels.inventory import check_kernel

    cuda = _triton()
    dtype = torch.float16 if activations == "float" else torch.float32  # the 2-bit half-activation GEMM
    result = check_kernel(getattr(cuda, cls_name), DEVICE, activations, dtype)
    assert result["ok"], result


@needs_cuda
@pytest.mark.parametrize("half", [False, True])
def test_fused_blocks_on_cuda_match_the_unfused_model(tiny_model, tiny_inputs, half):
    """LayerNorms and GELUs folded into the CUDA kernels: the model's outputs stay those of the
    same kernels with every op its own module."""
    from quant import preset, quantize_
    from quant.kernels import accelerate_

    images, tokens = tiny_inputs
    quantize_(tiny_model, preset("q-all"))
    model = tiny_model.cuda().half() if half else tiny_model.cuda()
    unfused = copy.deepcopy(model)
    assert accelerate_(unfused, fuse=False)["fused_ops"] == 0
    summary = accelerate_(model)
    assert summary["fused_ops"] > 0 and all(k.startswith("cuda") for k in summary["kernels"])
    dtype = torch.float16 if half else torch.float32
    with torch.no_grad():
        for enc, inp in (("encode_image", images.to(dtype)), ("encode_text", tokens)):
            got = getattr(model, enc)(inp.cuda()).float()
            want = getattr(unfused, enc)(inp.cuda()).float()
            assert F.cosine_similarity(got, want).min() > 0.9995, enc
