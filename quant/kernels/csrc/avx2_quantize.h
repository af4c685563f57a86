/* AVX2 helpers shared by the native W1.58A8 kernels: per-token absmax int8 quantization
 * (bit-equal to quant.kernels.reference.quantize_per_token) and the in-register transposes
 * that turn 16 tokens x 16 inputs of codes into 16-token int16 vectors, one per input. */
#pragma once
#include <immintrin.h>
#include <stdint.h>

/* A token's scale = max(absmax, eps) / 127, code = round(x / scale) (IEEE division, round half to even:
 * bit-equal to quant.kernels.reference.quantize_per_token). */
static inline float row_scale(const float *r, int K, float eps) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 mx = _mm256_setzero_ps();
  int k = 0;
  for (; k + 8 <= K; k += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(r + k)));
  float lanes[8], amax = 0.f;
  _mm256_storeu_ps(lanes, mx);
  for (int i = 0; i < 8; i++) amax = lanes[i] > amax ? lanes[i] : amax;
  for (; k < K; k++) { float a = r[k] < 0 ? -r[k] : r[k]; amax = a > amax ? a : amax; }
  return (amax > eps ? amax : eps) / 127.0f;
}

#define ROUND (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* One input's code: round(v / s), half to even. */
static inline int code_of(float v, float s) {
  __m128 q = _mm_set_ss(v / s);
  return _mm_cvtss_si32(_mm_round_ss(q, q, ROUND));
}

/* 16 floats -> their 16 int16 codes in order, i.e. 8 pairs as int32 (a | b << 16). */
static inline __m256i pair_codes(const float *r, __m256 vs) {
  __m256i lo = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(r), vs), ROUND));
  __m256i hi = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(r + 8), vs), ROUND));
  return _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
}

/* 8 x 8 int32 transpose: r[token][pair] -> r[pair][token]. */
static inline void transpose8(__m256i r[8]) {
  __m256i t[8], u[8];
  for (int i = 0; i < 4; i++) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; h++) {  /* h: tokens 0-3 / 4-7 */
    u[4 * h + 0] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
    u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
    u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
    u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
  }
  for (int p = 0; p < 4; p++) {
    r[p] = _mm256_permute2x128_si256(u[p], u[4 + p], 0x20);
    r[4 + p] = _mm256_permute2x128_si256(u[p], u[4 + p], 0x31);
  }
}

/* 8 int32 pairs of 8 tokens (two groups: tokens 0-7, 8-15) -> the 16-token int16 vector of the
 * pairs' low (a) or high (b) halves. */
static inline __m256i halves16(__m256i g0, __m256i g1, int high) {
  __m256i x0 = high ? _mm256_srai_epi32(g0, 16) : _mm256_srai_epi32(_mm256_slli_epi32(g0, 16), 16);
  __m256i x1 = high ? _mm256_srai_epi32(g1, 16) : _mm256_srai_epi32(_mm256_slli_epi32(g1, 16), 16);
  return _mm256_permute4x64_epi64(_mm256_packs_epi32(x0, x1), 0xD8);
}

