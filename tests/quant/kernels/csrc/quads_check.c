/* A stand-alone check of the quad-table kernel (csrc/ternary_quads.c) against a plain C reference,
 * for builds Python cannot load here: the portable form cross-compiled for ARM and run under qemu
 * (tests/quant/kernels/test_quads_c_check.py), and the forms of this machine. Exits 0 when every
 * output is bit-equal to fma(float(sum of codes x trits) * w_scale, x_scale, bias), the codes
 * decode back to the trits and tq_quantize's codes and scales are the reference's; prints the
 * first mismatch otherwise. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ternary_quads.c"

static uint64_t state = 88172645463325252ull;
static uint32_t next(void) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return (uint32_t)state; }
static float uniform(void) { return (float)(next() >> 8) / 16777216.0f; }

static int check(int M, int K, int N, int threads) {
  float *x = malloc(sizeof(float) * M * K), *ws = malloc(sizeof(float) * N), *bias = malloc(sizeof(float) * N);
  float *y = malloc(sizeof(float) * M * N), *xs = malloc(sizeof(float) * M);
  int8_t *w = malloc(N * K), *back = malloc(N * K);
  int16_t *codes = malloc(sizeof(int16_t) * M * K);
  uint8_t *packed = malloc(tq_code_bytes(N, K));
  for (int i = 0; i < M * K; i++) x[i] = (uniform() - 0.5f) * 20.0f * (1 + i % 7);
  for (int i = 0; i < N * K; i++) w[i] = (int8_t)(next() % 3) - 1;
  for (int n = 0; n < N; n++) ws[n] = uniform() + 0.01f, bias[n] = uniform() - 0.5f;
  tq_encode(w, N, K, packed);
  tq_decode(packed, N, K, back);
  for (int i = 0; i < N * K; i++)
    if (back[i] != w[i]) { printf("decode %dx%d: weight %d is %d, not %d\n", N, K, i, back[i], w[i]); return 1; }
  if (tq_linear(x, K, M, K, N, packed, ws, bias, 1e-5f, y, N, threads)) { printf("no memory\n"); return 1; }
  for (int m = 0; m < M; m++) {
    float amax = 0.f;
    for (int k = 0; k < K; k++) amax = fabsf(x[m * K + k]) > amax ? fabsf(x[m * K + k]) : amax;
    xs[m] = (amax > 1e-5f ? amax : 1e-5f) / 127.0f;
    for (int k = 0; k < K; k++) codes[m * K + k] = (int16_t)lrintf(x[m * K + k] / xs[m]);
  }
  int8_t *q8 = malloc(M * K);
  float *qs = malloc(sizeof(float) * M);
  tq_quantize(x, K, M, K, 1e-5f, q8, qs, threads);
  for (int m = 0; m < M; m++) {
    if (qs[m] != xs[m]) { printf("tq_quantize %dx%d: scale[%d] = %.9g, want %.9g\n", M, K, m, qs[m], xs[m]); return 1; }
    for (int k = 0; k < K; k++)
      if (q8[m * K + k] != codes[m * K + k]) {
        printf("tq_quantize %dx%d: code[%d][%d] = %d, want %d\n", M, K, m, k, q8[m * K + k], codes[m * K + k]);
        return 1;
      }
  }
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      int64_t acc = 0;
      for (int k = 0; k < K; k++) acc += codes[m * K + k] * w[n * K + k];
      float want = fmaf((float)acc * ws[n], xs[m], bias[n]);
      if (y[m * N + n] != want) {
        printf("%dx%dx%d on %d threads: y[%d][%d] = %.9g, want %.9g\n", M, K, N, threads, m, n, y[m * N + n], want);
        return 1;
      }
    }
  free(x), free(ws), free(bias), free(y), free(xs), free(w), free(back), free(codes), free(packed), free(q8), free(qs);
  return 0;
}

int main(void) {
  static const int shapes[][3] = {{1, 1, 3}, {3, 5, 7}, {17, 33, 65}, {50, 128, 384}, {65, 257, 129},
                                  {16, 800, 70}, {77, 512, 40}, {33, 3001, 9}};
  int failed = 0;
  for (unsigned i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    for (int threads = 1; threads <= 2; threads++) failed |= check(shapes[i][0], shapes[i][1], shapes[i][2], threads);
  printf(failed ? "FAILED\n" : "ok: %u shapes x 1 and 2 threads bit-equal\n", (unsigned)(sizeof shapes / sizeof shapes[0]));
  return failed;
}
