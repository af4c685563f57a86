/* W1.58A8 on AVX2 without multiplications: every 4 ternary weights are one byte, the index of
 * a table row that already holds their sum.
 *
 * Why: on AVX2-only CPUs (no VNNI) an int8 multiply-add GEMM is no faster than fp32 FMA, so
 * int8 alone cannot beat fp32. A ternary weight needs no multiply. We take the weights four at
 * a time along K: a quad (w0..w3) has 3^4 = 81 values, and for a block of 16 tokens we build,
 * per quad of inputs, all 81 sums  sum_d w_d x_d  as int16 rows of 16 tokens. A column of the
 * weight is then one byte per quad (its value's row) and one 16-lane add per byte: a quarter
 * of an add a weight, whatever the sparsity, and no branch: every column walks its bytes in
 * the same fixed order (the pair-table kernel's per-column lists of varying length cost a
 * branch mispredict per list; it measured 1.4-1.9x slower a layer). Weight memory: 2 bits a weight.
 *
 * Layout: codes[chunk][n][QC] (QC quads of a chunk; quads past K hold zero weights), the value
 * of (w0, w1, w2, w3) being 27 (w0 + 1) + 9 (w1 + 1) + 3 (w2 + 1) + (w3 + 1). Per thread and
 * token block: xt[k][16] the block's int16 codes by input (zero past K and past the tokens),
 * and the table of one chunk, tab[quad][81][16] int16 (31 KiB: it stays in L1 while every
 * column adds its rows from it). Columns sum in int16 lanes for WIDEN chunks, then widen into
 * int32. Output y = fma(float(acc) * w_scale[n], x_scale[m], bias[n]): the roundings of the FBGEMM
 * path (bit-equal to it, tested; FBGEMM's products and torch's addcmul use fused multiply-adds).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Two forms of the per-block steps that are not sums: AVX2 intrinsics (quantization through
 * in-register transposes, the epilogue through an 8 x 8 transpose) where the compiler targets AVX2,
 * else plain C (any CPU: NEON on ARM, SSE2 on other x86). The tables and the sums are written once,
 * in GCC / Clang vector extensions, which compile to the same vector adds either way. */
#ifdef __AVX2__
#include <immintrin.h>

#include "avx2_quantize.h"
#else
/* The plain-C forms of avx2_quantize.h's per-token scale and code (same roundings). */
static inline float row_scale(const float *r, int K, float eps) {
  float amax = 0.f;
  for (int k = 0; k < K; k++) amax = fabsf(r[k]) > amax ? fabsf(r[k]) : amax;
  return (amax > eps ? amax : eps) / 127.0f;
}
static inline int code_of(float v, float s) { return (int)lrintf(v / s); /* to nearest even */ }
#endif

typedef int16_t i16x16 __attribute__((vector_size(32)));  /* one table row: 16 tokens */
typedef int32_t i32x16 __attribute__((vector_size(64)));  /* a row widened: a column's int32 sums */

#define MB 16    /* tokens per block: one AVX2 vector of int16 lanes */
#define QC 12    /* quads per chunk: 12 x 81 rows x 32 B = 31 KiB, within a 32 KiB L1 */
#define ROWS 81  /* 3^4 values of a quad */
/* Chunks summed in int16 before widening: each add is at most 4 * 127 = 508 in magnitude. */
#define WIDEN 5
_Static_assert(WIDEN * QC * 4 * 127 <= 32767, "int16 partial sums must not overflow");

static inline int n_quads(int K) { return (K + 3) / 4; }
static inline int n_chunks(int K) { return (n_quads(K) + QC - 1) / QC; }

/* The layout, for the caller's allocation: bytes of the codes of an (N, K) weight. */
int64_t tq_code_bytes(int N, int K) { return (int64_t)n_chunks(K) * N * QC; }

void tq_encode(const int8_t *w, int N, int K, uint8_t *codes) {
  int nch = n_chunks(K);
  for (int c = 0; c < nch; c++)
    for (int n = 0; n < N; n++)
      for (int i = 0; i < QC; i++) {
        int k0 = 4 * (c * QC + i), v = 0;
        for (int d = 0; d < 4; d++) v = 3 * v + (k0 + d < K ? w[(int64_t)n * K + k0 + d] : 0) + 1;
        codes[((int64_t)c * N + n) * QC + i] = (uint8_t)v;
      }
}

void tq_decode(const uint8_t *codes, int N, int K, int8_t *w) {
  int nch = n_chunks(K);
  for (int c = 0; c < nch; c++)
    for (int n = 0; n < N; n++)
      for (int i = 0; i < QC; i++) {
        int k0 = 4 * (c * QC + i), v = codes[((int64_t)c * N + n) * QC + i];
        for (int d = 3; d >= 0; d--, v /= 3)
          if (k0 + d < K) w[(int64_t)n * K + k0 + d] = (int8_t)(v % 3 - 1);
      }
}

/* A block's mcount tokens (rows of x from m0) quantized into xt[k][16] (kpad rows, zero past K
 * and past mcount) and their scales xs[16]: scale = max(absmax, eps) / 127, code = round(x / scale),
 * half to even (bit-equal to quant.kernels.reference.quantize_per_token). */
#ifdef __AVX2__
/* 16 inputs x 16 tokens a step through the in-register transpose; the last K % 16 inputs one by one. */
static void quantize_block(const float *x, int64_t ldx, int m0, int mcount, int K, int kpad, float eps,
                           int16_t *xt, float *xs) {
  static const float zeros[16] = {0};
  for (int t = 0; t < MB; t++) xs[t] = t < mcount ? row_scale(x + (int64_t)(m0 + t) * ldx, K, eps) : 1.f;
  int kv = 0;
  for (; kv + 16 <= K; kv += 16) {
    __m256i g[2][8];
    for (int h = 0; h < 2; h++) {
      for (int i = 0; i < 8; i++) {
        int t = 8 * h + i;
        g[h][i] = t < mcount ? pair_codes(x + (int64_t)(m0 + t) * ldx + kv, _mm256_set1_ps(xs[t]))
                             : pair_codes(zeros, _mm256_set1_ps(1.f));
      }
      transpose8(g[h]);
    }
    for (int p = 0; p < 8; p++) {
      _mm256_store_si256((__m256i *)(xt + (int64_t)(kv + 2 * p) * MB), halves16(g[0][p], g[1][p], 0));
      _mm256_store_si256((__m256i *)(xt + (int64_t)(kv + 2 * p + 1) * MB), halves16(g[0][p], g[1][p], 1));
    }
  }
  memset(xt + (int64_t)kv * MB, 0, (size_t)(kpad - kv) * MB * sizeof(int16_t));
  for (int t = 0; t < mcount; t++)
    for (int k = kv; k < K; k++) xt[(int64_t)k * MB + t] = (int16_t)code_of(x[(int64_t)(m0 + t) * ldx + k], xs[t]);
}
#else
static void quantize_block(const float *x, int64_t ldx, int m0, int mcount, int K, int kpad, float eps,
                           int16_t *xt, float *xs) {
  memset(xt, 0, (size_t)kpad * MB * sizeof(int16_t));
  for (int t = 0; t < MB; t++) {
    xs[t] = 1.f;
    if (t >= mcount) continue;
    const float *r = x + (int64_t)(m0 + t) * ldx;
    xs[t] = row_scale(r, K, eps);
    for (int k = 0; k < K; k++) xt[(int64_t)k * MB + t] = (int16_t)code_of(r[k], xs[t]);
  }
}
#endif

/* The 81 rows of each of the QC quads starting at input quad q0: sums of the 9 (x0, x1)
 * combinations and the 9 (x2, x3) ones, row 27 (w0+1) + 9 (w1+1) + 3 (w2+1) + (w3+1). */
static void build_chunk(const int16_t *xt, int q0, int16_t *tab) {
  const i16x16 z = {0};
  for (int i = 0; i < QC; i++) {
    const i16x16 *x = (const i16x16 *)(xt + (int64_t)(q0 + i) * 4 * MB);
    i16x16 a[3] = {-x[0], z, x[0]}, c[3] = {-x[2], z, x[2]}, lo[9], hi[9];
    for (int u = 0; u < 3; u++) {
      lo[3 * u] = a[u] - x[1], lo[3 * u + 1] = a[u], lo[3 * u + 2] = a[u] + x[1];
      hi[3 * u] = c[u] - x[3], hi[3 * u + 1] = c[u], hi[3 * u + 2] = c[u] + x[3];
    }
    i16x16 *row = (i16x16 *)(tab + (int64_t)i * ROWS * MB);
    for (int p = 0; p < 9; p++)
      for (int r = 0; r < 9; r++) row[9 * p + r] = lo[p] + hi[r];
  }
}

/* Columns [n0, n1) add their rows of one chunk's table to their sums: int16 lanes, started at
 * zero in the first chunk of a WIDEN group (first) and widened into the int32 sums in its last
 * (last). A column's 12 code bytes come in as two integer loads and are cut apart in registers:
 * a load a byte would take a load port from the table rows, the loop's bottleneck. */
_Static_assert(QC == 12, "a column's codes of a chunk are read as 8 + 4 bytes");
static void add_chunk(const int16_t *tab, const uint8_t *codes, int n0, int n1, i16x16 *acc16, i32x16 *acc32,
                      int first, int last) {
  const char *rows = (const char *)tab;
  const uint8_t *cd = codes + (int64_t)n0 * QC;
  for (int n = n0; n < n1; n++, cd += QC) {
    uint64_t lo;
    uint32_t hi;
    memcpy(&lo, cd, 8);
    memcpy(&hi, cd + 8, 4);
    i16x16 a = {0}, b = {0};
    if (!first) a = acc16[n - n0];
    /* two chains of adds; row r of quad i at byte (i ROWS + r) x 32 */
#pragma GCC unroll 12
    for (int i = 0; i < QC; i++) {
      uint64_t off = ((i < 8 ? lo >> (8 * i) : hi >> (8 * (i - 8))) << 5) & 0x1fe0;  /* code x 32 bytes */
      const i16x16 *row = (const i16x16 *)(rows + (int64_t)i * ROWS * MB * 2 + off);
      if (i % 2) b += *row; else a += *row;
    }
    a += b;
    if (last)
      acc32[n - n0] += __builtin_convertvector(a, i32x16);
    else
      acc16[n - n0] = a;
  }
}

/* Scales and bias onto columns [n0, n1) of the block's mcount tokens, 8 columns x 8 tokens a step
 * through a transpose so that y is written a row (token) at a time. */
#ifdef __AVX2__
static void write_block(const i32x16 *acc, int n0, int n1, const float *xs, const float *ws, const float *bias,
                        int mcount, float *y, int64_t ldy) {
  const __m256i *acc32 = (const __m256i *)acc;  /* column j: tokens 0-7 at 2 j, 8-15 at 2 j + 1 */
  for (int nb = n0; nb < n1; nb += 8) {
    int ncount = n1 - nb < 8 ? n1 - nb : 8;
    for (int h = 0; h < 2; h++) {  /* tokens 8h .. 8h + 7 */
      __m256 xsv = _mm256_loadu_ps(xs + 8 * h);
      __m256i v[8];
      for (int i = 0; i < 8; i++) {
        int n = nb + (i < ncount ? i : 0);
        __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(acc32[2 * (n - n0) + h]), _mm256_set1_ps(ws[n]));
        p = _mm256_fmadd_ps(p, xsv, _mm256_set1_ps(bias ? bias[n] : 0.f));
        v[i] = _mm256_castps_si256(p);
      }
      transpose8(v);  /* v[t]: token 8h + t, columns nb .. nb + 7 */
      for (int t = 0; t < 8 && 8 * h + t < mcount; t++) {
        float *out = y + (int64_t)(8 * h + t) * ldy + nb;
        if (ncount == 8) {
          _mm256_storeu_ps(out, _mm256_castsi256_ps(v[t]));
        } else {
          float lanes[8];
          _mm256_storeu_ps(lanes, _mm256_castsi256_ps(v[t]));
          memcpy(out, lanes, (size_t)ncount * sizeof(float));
        }
      }
    }
  }
}

#else
static void write_block(const i32x16 *acc, int n0, int n1, const float *xs, const float *ws, const float *bias,
                        int mcount, float *y, int64_t ldy) {
  for (int t = 0; t < mcount; t++)
    for (int n = n0; n < n1; n++)  /* fma(acc w_scale, x_scale, bias): the AVX2 form's roundings */
      y[(int64_t)t * ldy + n] = fmaf((float)acc[n - n0][t] * ws[n], xs[t], bias ? bias[n] : 0.f);
}
#endif

/* Whether the last round of token blocks, fewer than the nt threads, is split by columns (1) or
 * by blocks (0). Full rounds always split by blocks: a column split builds every table on every
 * thread. For the last round, by blocks leaves threads idle; by columns every thread builds the
 * round's tables. Table building and quantization (per block, ~K) cost about TABLE_COST / N of a
 * block's sums (~N K / 4), measured. */
#define TABLE_COST 400.0
int tq_tail_by_columns(int M, int N, int nt) {
  int rem = (M + MB - 1) / MB % nt;
  double r = TABLE_COST / (N > 0 ? N : 1);
  return rem > 0 && rem * (r + 1.0 / nt) < r + 1.0;
}

/* One token block, columns [n0, n1) (buffers for at least n1 - n0 columns). */
static void block_product(const float *x, int64_t ldx, int mb, int M, int K, int N, const uint8_t *codes,
                          const float *ws, const float *bias, float eps, float *y, int64_t ldy, int n0, int n1,
                          int16_t *xt, int16_t *tab, i16x16 *acc16, i32x16 *acc32) {
  int nch = n_chunks(K), kpad = nch * QC * 4, cols = n1 - n0;
  int m0 = mb * MB, mcount = M - m0 < MB ? M - m0 : MB;
  float xs[MB];
  quantize_block(x, ldx, m0, mcount, K, kpad, eps, xt, xs);
  memset(acc32, 0, (size_t)cols * sizeof(i32x16));
  for (int c = 0; c < nch; c++) {
    build_chunk(xt, c * QC, tab);
    add_chunk(tab, codes + (int64_t)c * N * QC, n0, n1, acc16, acc32, c % WIDEN == 0, c % WIDEN == WIDEN - 1 || c == nch - 1);
  }
  write_block(acc32, n0, n1, xs, ws, bias, mcount, y + (int64_t)m0 * ldy, ldy);
}

/* y (M, N), row stride ldy = x (M, K) @ W.T * scales + bias, with W's codes. Threads take whole
 * token blocks round by round (each builds its own tables); a last round of fewer blocks than
 * threads is split by columns, in groups of 8, where tq_tail_by_columns says that is faster. The
 * threads are torch's own OpenMP pool (libgomp.so.1).
 * Returns 0, or 1 when a thread's buffers could not be allocated. */
int tq_linear(const float *x, int64_t ldx, int M, int K, int N, const uint8_t *codes, const float *ws,
              const float *bias, float eps, float *y, int64_t ldy, int threads) {
  int kpad = n_chunks(K) * QC * 4, nmb = (M + MB - 1) / MB, failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
#ifdef _OPENMP
    int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    int tid = 0, nt = 1;  /* built without OpenMP: one thread */
#endif
    int full = nmb / nt * nt;
    int tail_by_columns = tq_tail_by_columns(M, N, nt), ngroups = (N + 7) / 8;
    int n0 = 8 * (int)((int64_t)ngroups * tid / nt), n1 = 8 * (int)((int64_t)ngroups * (tid + 1) / nt);
    if (n1 > N) n1 = N;
    int16_t *xt = aligned_alloc(32, (size_t)(kpad > 0 ? kpad : 1) * MB * sizeof(int16_t));  /* K = 0: not NULL */
    int16_t *tab = aligned_alloc(64, (size_t)QC * ROWS * MB * sizeof(int16_t));
    i16x16 *acc16 = aligned_alloc(32, (size_t)(N > 0 ? N : 1) * sizeof(i16x16));
    i32x16 *acc32 = aligned_alloc(64, (size_t)(N > 0 ? N : 1) * sizeof(i32x16));
    if (!xt || !tab || !acc16 || !acc32) {
#pragma omp atomic write
      failed = 1;
    } else {
      for (int mb = full / nt * tid; mb < full / nt * (tid + 1); mb++)  /* full rounds: whole blocks */
        block_product(x, ldx, mb, M, K, N, codes, ws, bias, eps, y, ldy, 0, N, xt, tab, acc16, acc32);
      if (tail_by_columns) {
        for (int mb = full; mb < nmb && n0 < n1; mb++)
          block_product(x, ldx, mb, M, K, N, codes, ws, bias, eps, y, ldy, n0, n1, xt, tab, acc16, acc32);
      } else if (full + tid < nmb) {
        block_product(x, ldx, full + tid, M, K, N, codes, ws, bias, eps, y, ldy, 0, N, xt, tab, acc16, acc32);
      }
    }
    free(xt);
    free(tab);
    free(acc16);
    free(acc32);
  }
  return failed;
}

/* Per-token absmax int8 quantization alone, for the int8 GEMMs of other libraries (the oneDNN
 * kernel): codes (M, K) int8 and scales (M) of x (M, K), row stride ldx, in one pass over a row
 * after its absmax; bit-equal to quant.kernels.reference.quantize_per_token (and to the
 * quantization inside tq_linear). Rows are split across threads. */
void tq_quantize(const float *x, int64_t ldx, int M, int K, float eps, int8_t *codes, float *scales, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int m = 0; m < M; m++) {
    const float *r = x + (int64_t)m * ldx;
    int8_t *c = codes + (int64_t)m * K;
#ifdef __AVX2__
    float s = row_scale(r, K, eps);
    __m256 vs = _mm256_set1_ps(s);
    int k = 0;
    for (; k + 16 <= K; k += 16) {  /* 16 int16 codes in order, |code| <= 127: packed to int8 as they are */
      __m256i p = pair_codes(r + k, vs);
      _mm_storeu_si128((__m128i *)(c + k), _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1)));
    }
    for (; k < K; k++) {
      __m128 q = _mm_set_ss(r[k] / s);
      c[k] = (int8_t)_mm_cvtss_si32(_mm_round_ss(q, q, ROUND));
    }
#else
    float amax = 0.f;
    for (int k = 0; k < K; k++) amax = fabsf(r[k]) > amax ? fabsf(r[k]) : amax;
    float s = (amax > eps ? amax : eps) / 127.0f;
    for (int k = 0; k < K; k++) c[k] = (int8_t)lrintf(r[k] / s);  /* to nearest even */
#endif
    scales[m] = s;
  }
}
