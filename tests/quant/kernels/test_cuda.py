import copy

import pytest
import torch
import torch.nn.functional as F

from quant.kernels.reference import int_matmul_reference, quantize_per_token, ternary_linear_a8_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Few tokens (batch 1), a ViT-B block at batch 4 x 50 tokens, odd sizes everywhere, a large-M tile.
SHAPES = [(1, 64, 32), (3, 40, 24), (17, 130, 70), (200, 768, 3072), (301, 257, 129), (1600, 512, 256)]


def _case(m, k, n, seed, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * torch.rand(m, 1, generator=g) * 10
    trits = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
    w_scale, bias = torch.rand(n, generator=g) + 0.01, torch.randn(n, generator=g)
    return x.to(device), trits.to(device), w_scale.to(device), bias.to(device)


def _kernels():
    from quant.kernels import cuda

    kernels = [cuda.IntMMKernel]
    if cuda.HAVE_TRITON:
        kernels.append(cuda.TritonInt8Kernel)
    return kernels


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_triton_quantization_matches_reference(m, k, n):
    from quant.kernels.cuda import HAVE_TRITON, quantize_per_token_cuda

    if not HAVE_TRITON:
        pytest.skip("no Triton")
    x, *_ = _case(m, k, n, seed=m)
    codes, scale = quantize_per_token_cuda(x)
    ref_codes, ref_scale = quantize_per_token(x)
    torch.testing.assert_close(scale, ref_scale.squeeze(1), rtol=1e-6, atol=0)
    diff = (codes.int() - ref_codes.int()).abs()
    # Triton's fp32 division may differ by one ulp from torch's at an exact rounding tie.
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-4


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_triton_gemm_integer_part_is_exact(m, k, n):
    from quant.kernels.cuda import HAVE_TRITON, int8_matmul_scaled

    if not HAVE_TRITON:
        pytest.skip("no Triton")
    x, trits, _, _ = _case(m, k, n, seed=k)
    codes, _ = quantize_per_token(x)
    ones_m, ones_n = torch.ones(m, device="cuda"), torch.ones(n, device="cuda")
    acc = int8_matmul_scaled(codes, ones_m, trits, ones_n, None, torch.float32)
    # |acc| <= 127 * K < 2**24: exact in fp32.
    assert torch.equal(acc.double().cpu(), int_matmul_reference(codes.cpu(), trits.cpu()).double())


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
