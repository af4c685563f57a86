/* W1.58A8 on AVX2 without multiplications: ternary weights as pair-table row lists.
 *
 * Why: on AVX2-only CPUs (no VNNI) an int8 multiply-add GEMM is no faster than fp32 FMA
 * (both about 8 MAC/cycle/core on the machine we measured), so int8 alone cannot beat fp32.
 * A ternary weight needs no multiply: y[m, n] = sum of x[m, k] over w = +1 minus over w = -1.
 * We go one step further and take weights in pairs (k = 2j, 2j + 1): per token block we
 * build a table of 4 int16 rows per pair, x0, x1, x0 + x1, x0 - x1, and every non-zero
 * weight pair of a column is then ONE add or subtract of a table row. A column's work is a
 * list of table rows (adds, then subtracts), stored as uint8 gaps between row ids, so the
 * resident weight is about half a byte a weight (fp32: 4) and the accumulation is exact.
 *
 * Layout: table[mb][j][t][MB] int16 (t = 0..3 as above, MB tokens of block mb; padding lanes
 * hold garbage whose sums are never written). A column's rows of one chunk of KC pairs sum in
 * int16 lanes, then widen into int32 accumulators. Output y = fma(float(acc) * w_scale[n],
 * x_scale[m], bias[n]), the same roundings as the FBGEMM path (bit-equal, tested).
 *
 * Gap encoding: per column and chunk, an add list and a subtract list of increasing row ids
 * r = 4 (j - chunk start) + t; each entry is r - previous (the first from 0): 0..255, since a
 * chunk has 256 rows, so the inner loop has no branch.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "avx2_quantize.h"

/* Weight pairs per chunk: a chunk of a token block's table is KC * 4 rows (32 KiB at 64 tokens),
 * small enough to stay in L1 while every column of a thread adds its rows from it (the kernel
 * is bound by table reads: from L2 it ran at 60% of the speed). A column's entries in a chunk
 * sum at most KC rows of |value| <= 254 into int16 lanes: 16256, no overflow. */
#define KC 64
_Static_assert(4 * KC <= 256, "row gaps within a chunk must fit a byte");

/* (w0, w1) -> +-(1 + table row type), 0: nothing. Indexed [w0 + 1][w1 + 1]. */
static const int8_t PAIR_CODE[3][3] = {{-3, -1, -4}, {-2, 0, 2}, {4, 1, 3}};
/* row type -> (w0, w1) for a positive entry (negated for the subtract list). */
static const int8_t TYPE_W0[4] = {1, 0, 1, 1}, TYPE_W1[4] = {0, 1, 1, -1};

static inline int n_chunks(int K) { return ((K + 1) / 2 + KC - 1) / KC; }

/* The layout, for the caller's allocations: chunks of K (counts[chunk][n][2]), and the int16 cells
 * of the table of M tokens in MB-token blocks. */
int tp_chunks(int K) { return n_chunks(K); }
int64_t tp_table_cells(int M, int K, int MB) { return (int64_t)((M + MB - 1) / MB) * ((K + 1) / 2) * 4 * MB; }

/* Encode trits (N, K): per column, per chunk, the add list then the subtract list of table rows
 * (ids relative to the chunk) as gaps. counts[chunk][n][2] (entries: <= KC),
 * offs[n] the column's first byte. out == NULL: count only. Returns the total bytes. */
int64_t tp_encode(const int8_t *w, int N, int K, uint8_t *out, uint8_t *counts, int64_t *offs) {
  int64_t pos = 0;
  int K2 = (K + 1) / 2, nch = n_chunks(K);
  for (int n = 0; n < N; n++) {
    const int8_t *r = w + (int64_t)n * K;
    if (offs) offs[n] = pos;
    for (int c = 0; c < nch; c++)
      for (int sub = 0; sub < 2; sub++) {
        int64_t start = pos;
        int prev = 0;
        for (int j = c * KC; j < K2 && j < (c + 1) * KC; j++) {
          int w0 = r[2 * j], w1 = 2 * j + 1 < K ? r[2 * j + 1] : 0;
          int code = PAIR_CODE[w0 + 1][w1 + 1];
          if (!code || (code < 0) != sub) continue;
          int row = 4 * (j - c * KC) + (code > 0 ? code : -code) - 1;
          if (out) out[pos] = (uint8_t)(row - prev);  /* 0..255: a chunk has 4 KC = 256 rows */
          prev = row;
          pos++;
        }
        if (counts) counts[((int64_t)c * N + n) * 2 + sub] = (uint8_t)(pos - start);
      }
  }
  return pos;
}

void tp_decode(const uint8_t *gaps, const uint8_t *counts, const int64_t *offs, int N, int K, int8_t *w) {
  int nch = n_chunks(K);
  memset(w, 0, (size_t)N * K);
  for (int n = 0; n < N; n++) {
    const uint8_t *g = gaps + offs[n];
    int8_t *r = w + (int64_t)n * K;
    for (int c = 0; c < nch; c++)
      for (int sub = 0; sub < 2; sub++) {
        int row = 0, count = counts[((int64_t)c * N + n) * 2 + sub], sign = sub ? -1 : 1;
        for (int i = 0; i < count; i++, g++) {
          row += *g;
          int j = c * KC + row / 4, t = row % 4;
          r[2 * j] = (int8_t)(sign * TYPE_W0[t]);
          if (2 * j + 1 < K) r[2 * j + 1] = (int8_t)(sign * TYPE_W1[t]);
        }
      }
  }
}

/* Pairs [j0, j1) of one token's codes into its lane of the block table (o: the lane's first cell). */
static void quantize_pairs(const float *r, int K, float s, int j0, int j1, int MB, int16_t *o) {
  __m256 vs = _mm256_set1_ps(s);
  int32_t codes[8];
  for (int j = j0; j < j1; j += 4) {
    int k = 2 * j;
    if (k + 8 <= K) {
      __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(r + k), vs), ROUND);
      _mm256_storeu_si256((__m256i *)codes, _mm256_cvtps_epi32(q));
    } else {
      for (int i = 0; i < 8; i++) codes[i] = code_of(k + i < K ? r[k + i] : 0.f, s);
    }
    for (int p = 0; p < 4 && j + p < j1; p++) {
      int16_t a = (int16_t)codes[2 * p], b = (int16_t)codes[2 * p + 1];
      int16_t *t = o + (int64_t)(j + p) * 4 * MB;
      t[0] = a; t[MB] = b; t[2 * MB] = (int16_t)(a + b); t[3 * MB] = (int16_t)(a - b);
    }
  }
}

/* Tokens [t0, t0 + 16) of a block (rows past mcount read as zeros), pairs [j, j + 8) with 2 j + 16 <= K. */
static void quantize_16x8(const float *x, int64_t ldx, const float *xs, int m0, int t0, int mcount, int j,
                          int MB, int16_t *block) {
  static const float zeros[16] = {0};
  __m256i g[2][8];
  for (int h = 0; h < 2; h++) {
    for (int i = 0; i < 8; i++) {
      int t = t0 + 8 * h + i;
      g[h][i] = t < mcount ? pair_codes(x + (int64_t)(m0 + t) * ldx + 2 * j, _mm256_set1_ps(xs[m0 + t]))
                           : pair_codes(zeros, _mm256_set1_ps(1.f));
    }
    transpose8(g[h]);
  }
  for (int p = 0; p < 8; p++) {
    __m256i a = halves16(g[0][p], g[1][p], 0), b = halves16(g[0][p], g[1][p], 1);
    int16_t *t = block + (int64_t)(j + p) * 4 * MB + t0;
    _mm256_storeu_si256((__m256i *)t, a);
    _mm256_storeu_si256((__m256i *)(t + MB), b);
    _mm256_storeu_si256((__m256i *)(t + 2 * MB), _mm256_add_epi16(a, b));
    _mm256_storeu_si256((__m256i *)(t + 3 * MB), _mm256_sub_epi16(a, b));
  }
}

/* Threads split the token blocks (a block's lanes share cache lines); within a block the table
 * is written a chunk of pairs at a time, 16 tokens x 8 pairs per step through an in-register
 * transpose (one scalar store per cell was 4x slower). */
void tp_quantize_table(const float *x, int64_t ldx, int M, int K, int MB, float eps, int16_t *table,
                       float *xs, int threads) {
  int nmb = (M + MB - 1) / MB, K2 = (K + 1) / 2;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && nmb > 1)
  for (int mb = 0; mb < nmb; mb++) {
    int m0 = mb * MB, mcount = M - m0 < MB ? M - m0 : MB;
    int16_t *block = table + (int64_t)mb * K2 * 4 * MB;
    for (int i = 0; i < mcount; i++) xs[m0 + i] = row_scale(x + (int64_t)(m0 + i) * ldx, K, eps);
    for (int j0 = 0; j0 < K2; j0 += KC) {
      int j1 = j0 + KC < K2 ? j0 + KC : K2, jv = j0;
      for (; jv + 8 <= j1 && 2 * jv + 16 <= K; jv += 8)
        for (int t0 = 0; t0 < mcount; t0 += 16) quantize_16x8(x, ldx, xs, m0, t0, mcount, jv, MB, block);
      if (jv < j1)  /* the last pairs of K */
        for (int i = 0; i < mcount; i++) quantize_pairs(x + (int64_t)(m0 + i) * ldx, K, xs[m0 + i], jv, j1, MB, block + i);
    }
  }
}

/* One column's entries in one chunk added into its int32 accumulators (2 NV vectors of 8 tokens,
 * in memory); returns where the column's next chunk starts. */
#define DEFINE_CHUNK(NV)                                                                             \
  static inline const uint8_t *chunk_##NV(const int16_t *rows, const uint8_t *g, int nadd, int nsub, \
                                          __m256i *acc32) {                                          \
    __m256i a16[NV];                                                                                 \
    for (int v = 0; v < NV; v++) a16[v] = _mm256_setzero_si256();                                    \
    const int16_t *row = rows;                                                                       \
    for (const uint8_t *ge = g + nadd; g < ge; g++) {                                                \
      row += *g * NV * 16;                                                                           \
      for (int v = 0; v < NV; v++)                                                                   \
        a16[v] = _mm256_add_epi16(a16[v], _mm256_load_si256((const __m256i *)row + v));              \
    }                                                                                                \
    row = rows;                                                                                      \
    for (const uint8_t *ge = g + nsub; g < ge; g++) {                                                \
      row += *g * NV * 16;                                                                           \
      for (int v = 0; v < NV; v++)                                                                   \
        a16[v] = _mm256_sub_epi16(a16[v], _mm256_load_si256((const __m256i *)row + v));              \
    }                                                                                                \
    for (int v = 0; v < NV; v++) {                                                                   \
      __m256i lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a16[v]));                            \
      __m256i hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a16[v], 1));                       \
      _mm256_store_si256(acc32 + 2 * v, _mm256_add_epi32(_mm256_load_si256(acc32 + 2 * v), lo));     \
      _mm256_store_si256(acc32 + 2 * v + 1, _mm256_add_epi32(_mm256_load_si256(acc32 + 2 * v + 1), hi)); \
    }                                                                                                \
    return g;                                                                                        \
  }
DEFINE_CHUNK(2)
DEFINE_CHUNK(3)
DEFINE_CHUNK(4)

/* y (M, N) row-major with row stride ldy. Each thread owns a range of columns (groups of 8) and
 * needs no barrier; per token block it walks the table chunk by chunk, every one of its columns
 * adding its rows of that chunk, then scales and writes its columns. The threads are torch's own
 * OpenMP pool (the library links libgomp.so.1, torch's copy once torch is loaded).
 * Returns 0, or 1 when a thread's accumulators could not be allocated. */
int tp_gemm(const int16_t *table, int M, int K, int N, int MB, const uint8_t *gaps, const uint8_t *counts,
             const int64_t *offs, const float *xs, const float *ws, const float *bias, float *y, int64_t ldy,
             int threads) {
  int K2 = (K + 1) / 2, nmb = (M + MB - 1) / MB, nch = n_chunks(K), ngroups = (N + 7) / 8, failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    int n0 = 8 * (int)((int64_t)ngroups * tid / nt), n1 = 8 * (int)((int64_t)ngroups * (tid + 1) / nt);
    if (n1 > N) n1 = N;
    if (n0 < n1) {
      int32_t *acc = aligned_alloc(32, (size_t)(n1 - n0) * MB * sizeof(int32_t));
      const uint8_t **next = malloc((size_t)(n1 - n0) * sizeof(*next));
      float tmp[8][64] __attribute__((aligned(32)));
      if (!acc || !next) {
#pragma omp atomic write
        failed = 1;
      }
      for (int mb = 0; mb < nmb && acc && next; mb++) {
        const int16_t *block = table + (int64_t)mb * K2 * 4 * MB;
        int mcount = M - mb * MB < MB ? M - mb * MB : MB;
        memset(acc, 0, (size_t)(n1 - n0) * MB * sizeof(int32_t));
        for (int n = n0; n < n1; n++) next[n - n0] = gaps + offs[n];
        for (int c = 0; c < nch; c++) {
          const int16_t *rows = block + (int64_t)c * KC * 4 * MB;
          const uint8_t *cnt = counts + ((int64_t)c * N) * 2;
          for (int n = n0; n < n1; n++) {
            __m256i *a = (__m256i *)(acc + (int64_t)(n - n0) * MB);
            next[n - n0] = MB == 64   ? chunk_4(rows, next[n - n0], cnt[2 * n], cnt[2 * n + 1], a)
                           : MB == 48 ? chunk_3(rows, next[n - n0], cnt[2 * n], cnt[2 * n + 1], a)
                                      : chunk_2(rows, next[n - n0], cnt[2 * n], cnt[2 * n + 1], a);
          }
        }
        for (int nb = n0; nb < n1; nb += 8) {
          int ncount = n1 - nb < 8 ? n1 - nb : 8;
          for (int i = 0; i < ncount; i++) {
            int n = nb + i;
            const __m256i *a = (const __m256i *)(acc + (int64_t)(n - n0) * MB);
            __m256 w = _mm256_set1_ps(ws[n]), b = _mm256_set1_ps(bias ? bias[n] : 0.f);
            for (int v = 0; v < MB / 8; v++) {
              __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_load_si256(a + v)), w);
              p = _mm256_fmadd_ps(p, _mm256_loadu_ps(xs + mb * MB + 8 * v), b);
              _mm256_store_ps(tmp[i] + 8 * v, p);
            }
          }
          float *out = y + (int64_t)mb * MB * ldy + nb;
          for (int m = 0; m < mcount; m++)
            for (int i = 0; i < ncount; i++) out[(int64_t)m * ldy + i] = tmp[i][m];
        }
      }
      free(next);
      free(acc);
    }
  }
  return failed;
}
