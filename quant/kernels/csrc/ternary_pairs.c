/* W1.58A8 on AVX2 without multiplications: ternary weights as pair-table row lists.
 *
 * Why: on AVX2-only CPUs (no VNNI) an int8 multiply-add GEMM is no faster than fp32 FMA
 * (both about 8 MAC/cycle/core on the machine we measured), so int8 alone cannot beat fp32.
 * A ternary weight needs no multiply: y[m, n] = sum of x[m, k] over w = +1 minus over w = -1.
 * We go one step further and take weights in pairs (k = 2j, 2j + 1): per token block we
 * build a table of 4 int16 rows per pair, x0, x1, x0 + x1, x0 - x1, and every non-zero
 * weight pair of a column is then ONE add or subtract of a table row. A column's work is a
 * list of table rows (adds, then subtracts), stored as uint8 gaps between row ids, so the
 * resident weight is about 0.45 bytes a weight (fp32: 4) and the accumulation is exact.
 *
 * Layout: table[mb][j][t][MB] int16 (t = 0..3 as above, MB tokens of block mb, zero padded).
 * Rows are added into int16 lanes (|row| <= 254, so FLUSH = 128 rows fit) and widened into
 * int32 every FLUSH rows. Output y = float(acc) * w_scale[n] * x_scale[m] + bias[n], in the
 * same order of roundings as the FBGEMM path (FBGEMM applies w_scale, then we x_scale).
 *
 * Gap encoding: a list is increasing row ids r (= 4 j + t); each entry is r - previous
 * (the first from -1), 1..255; 0 means "advance 255 rows, add nothing" (long zero runs).
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define FLUSH 128

/* (w0, w1) -> +-(1 + table row type), 0: nothing. Indexed [w0 + 1][w1 + 1]. */
static const int8_t PAIR_CODE[3][3] = {{-3, -1, -4}, {-2, 0, 2}, {4, 1, 3}};
/* row type -> (w0, w1) for a positive entry (negated for the subtract list). */
static const int8_t TYPE_W0[4] = {1, 0, 1, 1}, TYPE_W1[4] = {0, 1, 1, -1};

int64_t tp_encode(const int8_t *w, int N, int K, uint8_t *out, int64_t *offs, int32_t *nadd, int32_t *nsub) {
  int64_t pos = 0;
  int K2 = (K + 1) / 2;
  for (int n = 0; n < N; n++) {
    const int8_t *r = w + (int64_t)n * K;
    if (offs) offs[n] = pos;
    for (int sub = 0; sub < 2; sub++) {
      int64_t start = pos;
      int prev = -1;
      for (int j = 0; j < K2; j++) {
        int w0 = r[2 * j], w1 = 2 * j + 1 < K ? r[2 * j + 1] : 0;
        int c = PAIR_CODE[w0 + 1][w1 + 1];
        if (!c || (c < 0) != sub) continue;
        int row = 4 * j + (c > 0 ? c : -c) - 1, gap = row - prev;
        prev = row;
        for (; gap > 255; gap -= 255, pos++)
          if (out) out[pos] = 0;
        if (out) out[pos] = (uint8_t)gap;
        pos++;
      }
      int32_t *count = sub ? nsub : nadd;
      if (count) count[n] = (int32_t)(pos - start);
    }
  }
  return pos;
}

void tp_decode(const uint8_t *gaps, const int64_t *offs, const int32_t *nadd, const int32_t *nsub,
               int N, int K, int8_t *w) {
  memset(w, 0, (size_t)N * K);
  for (int n = 0; n < N; n++) {
    const uint8_t *g = gaps + offs[n];
    int8_t *r = w + (int64_t)n * K;
    for (int sub = 0; sub < 2; sub++) {
      int row = -1, count = sub ? nsub[n] : nadd[n], sign = sub ? -1 : 1;
      for (int i = 0; i < count; i++, g++) {
        if (!*g) { row += 255; continue; }
        row += *g;
        int j = row / 4, t = row % 4;
        r[2 * j] = (int8_t)(sign * TYPE_W0[t]);
        if (2 * j + 1 < K) r[2 * j + 1] = (int8_t)(sign * TYPE_W1[t]);
      }
    }
  }
}

/* Per-token absmax int8 codes of x rows [m0, m1) (row stride ldx floats) into the pair table
 * of MB-token blocks, and their scales: scale = max(absmax, eps) / 127, code = round(x / scale)
 * (IEEE division, round half to even: bit-equal to quant.kernels.reference.quantize_per_token). */
static void quantize_row(const float *r, int m, int K, int MB, float eps, int16_t *table, float *xs) {
  int K2 = (K + 1) / 2;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  {
    __m256 mx = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(r + k)));
    float lanes[8], amax = 0.f;
    _mm256_storeu_ps(lanes, mx);
    for (int i = 0; i < 8; i++) amax = lanes[i] > amax ? lanes[i] : amax;
    for (; k < K; k++) { float a = r[k] < 0 ? -r[k] : r[k]; amax = a > amax ? a : amax; }
    float s = (amax > eps ? amax : eps) / 127.0f;
    xs[m] = s;
    int16_t *o = table + (int64_t)(m / MB) * K2 * 4 * MB + m % MB;
    __m256 vs = _mm256_set1_ps(s);
    int32_t codes[8];
    for (k = 0; k < K; k += 8) {
      if (k + 8 <= K) {
        __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(r + k), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_si256((__m256i *)codes, _mm256_cvtps_epi32(q));
      } else {
        for (int i = 0; i < 8; i++) {
          float q = k + i < K ? r[k + i] / s : 0.f;
          codes[i] = (int32_t)_mm_cvtss_f32(_mm_round_ss(_mm_setzero_ps(), _mm_set_ss(q), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
      }
      for (int i = 0; i < 8 && k + i < K; i += 2) {
        int16_t a = (int16_t)codes[i], b = (int16_t)codes[i + 1];
        int16_t *t = o + (int64_t)((k + i) / 2) * 4 * MB;
        t[0] = a; t[MB] = b; t[2 * MB] = (int16_t)(a + b); t[3 * MB] = (int16_t)(a - b);
      }
    }
  }
}

/* Threads split the token blocks (a block's table lanes are shared cache lines). */
void tp_quantize_table(const float *x, int64_t ldx, int M, int K, int MB, float eps, int16_t *table,
                       float *xs, int threads) {
  int nmb = (M + MB - 1) / MB;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && nmb > 1)
  for (int mb = 0; mb < nmb; mb++)
    for (int m = mb * MB; m < M && m < (mb + 1) * MB; m++) quantize_row(x + (int64_t)m * ldx, m, K, MB, eps, table, xs);
}

/* One column n over one token block: NV int16 vectors of 16 tokens (MB = 16 NV). */
#define DEFINE_COLUMN(NV)                                                                            \
  static inline void column_##NV(const int16_t *rows, const uint8_t *g, int nadd, int nsub,          \
                                 __m256i *acc32) {                                                   \
    __m256i a16[NV];                                                                                 \
    for (int v = 0; v < 2 * NV; v++) acc32[v] = _mm256_setzero_si256();                             \
    for (int sub = 0; sub < 2; sub++) {                                                              \
      const int16_t *row = rows - NV * 16;                                                           \
      int count = sub ? nsub : nadd;                                                                 \
      for (int c0 = 0; c0 < count; c0 += FLUSH) {                                                    \
        const uint8_t *ge = g + (count - c0 < FLUSH ? count - c0 : FLUSH);                           \
        for (int v = 0; v < NV; v++) a16[v] = _mm256_setzero_si256();                                \
        if (!sub) {                                                                                  \
          for (; g < ge; g++) {                                                                      \
            unsigned d = *g;                                                                         \
            if (__builtin_expect(d == 0, 0)) { row += 255 * NV * 16; continue; }                     \
            row += d * NV * 16;                                                                      \
            for (int v = 0; v < NV; v++)                                                             \
              a16[v] = _mm256_add_epi16(a16[v], _mm256_load_si256((const __m256i *)row + v));        \
          }                                                                                          \
        } else {                                                                                     \
          for (; g < ge; g++) {                                                                      \
            unsigned d = *g;                                                                         \
            if (__builtin_expect(d == 0, 0)) { row += 255 * NV * 16; continue; }                     \
            row += d * NV * 16;                                                                      \
            for (int v = 0; v < NV; v++)                                                             \
              a16[v] = _mm256_sub_epi16(a16[v], _mm256_load_si256((const __m256i *)row + v));        \
          }                                                                                          \
        }                                                                                            \
        for (int v = 0; v < NV; v++) {                                                               \
          acc32[2 * v] = _mm256_add_epi32(acc32[2 * v], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a16[v]))); \
          acc32[2 * v + 1] = _mm256_add_epi32(acc32[2 * v + 1], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a16[v], 1))); \
        }                                                                                            \
      }                                                                                              \
    }                                                                                                \
  }
DEFINE_COLUMN(2)
DEFINE_COLUMN(4)

/* y (M, N) row-major with row stride ldy. Token blocks in turn (one block's table stays in L2);
 * threads split the columns in groups of 8 (the same columns for every block: their lists stay
 * in the thread's cache). The threads are torch's own OpenMP pool (same libgomp.so.1). */
void tp_gemm(const int16_t *table, int M, int K, int N, int MB, const uint8_t *gaps, const int64_t *offs,
             const int32_t *nadd, const int32_t *nsub, const float *xs, const float *ws, const float *bias,
             float *y, int64_t ldy, int threads) {
  int K2 = (K + 1) / 2, nmb = (M + MB - 1) / MB, ngroups = (N + 7) / 8;
#pragma omp parallel num_threads(threads) if (threads > 1)
  for (int mb = 0; mb < nmb; mb++) {
    const int16_t *rows = table + (int64_t)mb * K2 * 4 * MB;
    int mcount = M - mb * MB < MB ? M - mb * MB : MB;
#pragma omp for schedule(static)
    for (int group = 0; group < ngroups; group++) {
      float tmp[8][64] __attribute__((aligned(32)));
      __m256i acc32[8];
      int nb = 8 * group, ncount = N - nb < 8 ? N - nb : 8;
      for (int c = 0; c < ncount; c++) {
        int n = nb + c;
        if (MB == 64) column_4(rows, gaps + offs[n], nadd[n], nsub[n], acc32);
        else column_2(rows, gaps + offs[n], nadd[n], nsub[n], acc32);
        __m256 w = _mm256_set1_ps(ws[n]), b = _mm256_set1_ps(bias ? bias[n] : 0.f);
        for (int v = 0; v < MB / 8; v++) {
          __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(acc32[v]), w);
          p = _mm256_mul_ps(p, _mm256_loadu_ps(xs + mb * MB + 8 * v));
          _mm256_store_ps(tmp[c] + 8 * v, _mm256_add_ps(p, b));
        }
      }
      float *out = y + (int64_t)mb * MB * ldy + nb;
      for (int m = 0; m < mcount; m++)
        for (int c = 0; c < ncount; c++) out[(int64_t)m * ldy + c] = tmp[c][m];
    }
  }
}
