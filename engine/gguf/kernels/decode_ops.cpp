// The decode step's work around the weights, for the CPU: rotary position embedding of the new token's queries and
// keys, and attention of a few query tokens (one a row) over each row's cached keys and values. Built into the same
// extension as the GGUF block kernels (engine/gguf/kernels/blocks.cpp registers them).
//
// bfloat16 tensors are rounded where PyTorch's own bfloat16 ops round, so that a step here computes what
// transformers' forward computes on the same inputs; attention accumulates in float32, as PyTorch's CPU kernels do.
#include "kernels.h"

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr int LANES = 16;  // independent partial sums: the compiler turns each loop over them into vector ops

float widen(float v) { return v; }

float widen(c10::BFloat16 v) { return static_cast<float>(v); }

// float32 -> the element type, rounding to nearest even for bfloat16 (PyTorch's rounding)
template <typename T>
T narrow(float v) { return static_cast<T>(v); }

// float32 -> float32 -> float32 through the element type: what a PyTorch op on T tensors stores
template <typename T>
float rounded(float v) { return widen(narrow<T>(v)); }

template <typename T>
void widen_row(const T* from, float* to, int64_t n) {
  for (int64_t i = 0; i < n; i++) to[i] = widen(from[i]);
}

float dot(const float* a, const float* b, int64_t n) {  // n a multiple of LANES
  float lanes[LANES] = {};
  for (int64_t i = 0; i < n; i += LANES) {
    for (int l = 0; l < LANES; l++) lanes[l] += a[i + l] * b[i + l];
  }
  float sum = 0.f;
  for (int l = 0; l < LANES; l++) sum += lanes[l];
  return sum;
}

// x * cos + rotate_half(x) * sin for one head of `dim` values, in place: transformers' rotary form, each product
// and the sum rounded to T as its elementwise ops round them.
template <typename T>
void rotate_head(T* x, const T* cos, const T* sin, int64_t dim, float* tmp) {
  int64_t half = dim / 2;
  widen_row(x, tmp, dim);
  for (int64_t i = 0; i < dim; i++) {
    float turned = i < half ? -tmp[i + half] : tmp[i - half];
    x[i] = narrow<T>(rounded<T>(tmp[i] * widen(cos[i])) + rounded<T>(turned * widen(sin[i])));
  }
}

template <typename T>
void rope_typed(torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  int64_t rows = x.size(0), heads = x.size(1), dim = x.size(2);
  T* data = x.data_ptr<T>();
  const T* c = cos.data_ptr<T>();
  const T* s = sin.data_ptr<T>();
  std::vector<float> tmp(dim);
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t h = 0; h < heads; h++) {
      rotate_head(data + (r * heads + h) * dim, c + r * dim, s + r * dim, dim, tmp.data());
    }
  }
}

#if defined(__AVX512F__)
__m512 load16(const float* p) { return _mm512_loadu_ps(p); }

__m512 load16(const c10::BFloat16* p) {  // bfloat16 is the top half of a float32
  __m256i bits = _mm256_loadu_si256((const __m256i*)p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// e^x for x <= 0 (softmax's shifted scores): 2^(x log2 e) as 2^n x 2^f, |f| <= 1/2, with a degree-6 polynomial for
// 2^f. Relative error within 1e-6 for x >= -20 (4e-6 down to -87, where e^x is below 1e-37), measured against
// float64 exp.
__m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(1.535336188319500e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}
#endif

#if defined(__AVX512F__)
// Scores and weighted values for two query heads at a time, their queries and sums held in registers: `dim` = 16 x
// NV values. s0[t] = q0 . keys[t], s1[t] = q1 . keys[t] (unscaled); acc0 = sum over t of w0[t] x values[t], and
// acc1 of w1.
template <int NV, typename T>
void scores2(const float* q0, const float* q1, const T* keys, int64_t stride, int64_t n, float* s0, float* s1) {
  __m512 a[NV], b[NV];
  for (int j = 0; j < NV; j++) {
    a[j] = _mm512_loadu_ps(q0 + 16 * j);
    b[j] = _mm512_loadu_ps(q1 + 16 * j);
  }
  for (int64_t t = 0; t < n; t++) {
    __m512 sa = _mm512_setzero_ps(), sb = _mm512_setzero_ps();
    for (int j = 0; j < NV; j++) {
      __m512 k = load16(keys + t * stride + 16 * j);
      sa = _mm512_fmadd_ps(a[j], k, sa);
      sb = _mm512_fmadd_ps(b[j], k, sb);
    }
    s0[t] = _mm512_reduce_add_ps(sa);
    s1[t] = _mm512_reduce_add_ps(sb);
  }
}

template <int NV, typename T>
void values2(const float* w0, const float* w1, const T* values, int64_t stride, int64_t n, float* acc0, float* acc1) {
  __m512 a[NV], b[NV];
  for (int j = 0; j < NV; j++) a[j] = b[j] = _mm512_setzero_ps();
  for (int64_t t = 0; t < n; t++) {
    __m512 p0 = _mm512_set1_ps(w0[t]), p1 = _mm512_set1_ps(w1[t]);
    for (int j = 0; j < NV; j++) {
      __m512 v = load16(values + t * stride + 16 * j);
      a[j] = _mm512_fmadd_ps(p0, v, a[j]);
      b[j] = _mm512_fmadd_ps(p1, v, b[j]);
    }
  }
  for (int j = 0; j < NV; j++) {
    _mm512_storeu_ps(acc0 + 16 * j, a[j]);
    _mm512_storeu_ps(acc1 + 16 * j, b[j]);
  }
}
#endif

// Query heads `q0` and `q1` (the same head twice when one is left) against the keys or values of their KV head.
template <typename T>
void scores_pair(const float* q0, const float* q1, const T* keys, int64_t stride, int64_t n, int64_t dim,
                 float* s0, float* s1) {
#if defined(__AVX512F__)
  if (dim == 128) return scores2<8>(q0, q1, keys, stride, n, s0, s1);
  if (dim == 64) return scores2<4>(q0, q1, keys, stride, n, s0, s1);
#endif
  std::vector<float> row(dim);
  for (int64_t t = 0; t < n; t++) {
    widen_row(keys + t * stride, row.data(), dim);
    s0[t] = dot(q0, row.data(), dim);
    s1[t] = dot(q1, row.data(), dim);
  }
}

template <typename T>
void values_pair(const float* w0, const float* w1, const T* values, int64_t stride, int64_t n, int64_t dim,
                 float* acc0, float* acc1) {
#if defined(__AVX512F__)
  if (dim == 128) return values2<8>(w0, w1, values, stride, n, acc0, acc1);
  if (dim == 64) return values2<4>(w0, w1, values, stride, n, acc0, acc1);
#endif
  std::vector<float> row(dim);
  std::fill(acc0, acc0 + dim, 0.f);
  std::fill(acc1, acc1 + dim, 0.f);
  for (int64_t t = 0; t < n; t++) {
    widen_row(values + t * stride, row.data(), dim);
    for (int64_t i = 0; i < dim; i++) {
      acc0[i] += w0[t] * row[i];
      acc1[i] += w1[t] * row[i];
    }
  }
}

// softmax of scale x s[0..n), in place; returns the sum of the exponentials (the caller divides by it)
float softmax_unnormalized(float* s, int64_t n, float scale) {
  float top = -std::numeric_limits<float>::infinity();
  int64_t t = 0;
#if defined(__AVX512F__)
  __m512 tops = _mm512_set1_ps(top);
  for (; t + 16 <= n; t += 16) tops = _mm512_max_ps(tops, _mm512_loadu_ps(s + t));
  top = _mm512_reduce_max_ps(tops);
#endif
  for (; t < n; t++) top = std::max(top, s[t]);
  float sum = 0.f;
  t = 0;
#if defined(__AVX512F__)
  __m512 sums = _mm512_setzero_ps(), vscale = _mm512_set1_ps(scale), vtop = _mm512_set1_ps(top);
  for (; t + 16 <= n; t += 16) {
    __m512 e = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(s + t), vtop), vscale));
    _mm512_storeu_ps(s + t, e);
    sums = _mm512_add_ps(sums, e);
  }
  sum = _mm512_reduce_add_ps(sums);
#endif
  for (; t < n; t++) {
    s[t] = std::exp((s[t] - top) * scale);
    sum += s[t];
  }
  return sum;
}

#if defined(__AVX512BF16__)
// Four bfloat16 query heads' scores against every key, the bfloat16 pairs multiplied and summed into float32 by the
// CPU's bfloat16 dot product (dim = 32 x NP): s[g][t] = q[g] . keys[t].
template <int NP>
void scores4_bf16(const c10::BFloat16* const* q, const c10::BFloat16* keys, int64_t stride, int64_t n,
                  float* const* s) {
  __m512bh qv[4][NP];
  for (int g = 0; g < 4; g++) {
    for (int j = 0; j < NP; j++) qv[g][j] = (__m512bh)_mm512_loadu_si512((const void*)(q[g] + 32 * j));
  }
  for (int64_t t = 0; t < n; t++) {
    __m512bh k[NP];
    for (int j = 0; j < NP; j++) k[j] = (__m512bh)_mm512_loadu_si512((const void*)(keys + t * stride + 32 * j));
    __m256 half[4];
    for (int g = 0; g < 4; g++) {
      __m512 sum = _mm512_setzero_ps();
      for (int j = 0; j < NP; j++) sum = _mm512_dpbf16_ps(sum, qv[g][j], k[j]);
      half[g] = _mm256_add_ps(_mm512_castps512_ps256(sum),
                              _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sum), 1)));
    }
    // the four sums at once: pairwise adds leave [g0 g1 g2 g3] in each 128-bit half
    __m256 all = _mm256_hadd_ps(_mm256_hadd_ps(half[0], half[1]), _mm256_hadd_ps(half[2], half[3]));
    float four[4];
    _mm_storeu_ps(four, _mm_add_ps(_mm256_castps256_ps128(all), _mm256_extractf128_ps(all, 1)));
    for (int g = 0; g < 4; g++) s[g][t] = four[g];
  }
}
#endif

// Every query head's scores against every key: scores[g * n + t] = q[g] . keys[t] (unscaled).
template <typename T>
void all_scores(const T* q, const float* qf, const T* keys, int64_t stride, int64_t n, int64_t group, int64_t dim,
                float* scores) {
  int64_t g = 0;
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    for (; (dim == 128 || dim == 64) && g < group; g += 4) {  // four at a time, the last repeated where fewer are left
      const c10::BFloat16* qs[4];
      float* ss[4];
      for (int j = 0; j < 4; j++) {
        int64_t h = std::min(g + j, group - 1);
        qs[j] = q + h * dim;
        ss[j] = scores + h * n;
      }
      if (dim == 128) {
        scores4_bf16<4>(qs, keys, stride, n, ss);
      } else {
        scores4_bf16<2>(qs, keys, stride, n, ss);
      }
    }
  }
#endif
  for (; g < group; g += 2) {
    int64_t g1 = std::min(g + 1, group - 1);
    scores_pair(qf + g * dim, qf + g1 * dim, keys, stride, n, dim, scores + g * n, scores + g1 * n);
  }
}

// One row's query heads that share KV head `keys`/`values` (`n` positions, `stride` elements apart) attending over
// them: out[g] = softmax(scale x q[g] . keys) . values, in float32, stored as T.
template <typename T>
void attend_group(const T* q, const T* keys, const T* values, int64_t stride, int64_t n, int64_t group, int64_t dim,
                  float scale, T* out) {
  std::vector<float> qf(group * dim), scores(group * n), total(group), acc(2 * dim);
  widen_row(q, qf.data(), group * dim);
  all_scores(q, qf.data(), keys, stride, n, group, dim, scores.data());
  for (int64_t g = 0; g < group; g++) total[g] = softmax_unnormalized(scores.data() + g * n, n, scale);
  for (int64_t g = 0; g < group; g += 2) {
    int64_t g1 = std::min(g + 1, group - 1);
    values_pair(scores.data() + g * n, scores.data() + g1 * n, values, stride, n, dim, acc.data(), acc.data() + dim);
    for (int64_t i = 0; i < dim; i++) {
      out[g * dim + i] = narrow<T>(acc[i] / total[g]);
      out[g1 * dim + i] = narrow<T>(acc[dim + i] / total[g1]);
    }
  }
}

#if defined(__AVX512BF16__)
// Prefill: many rows over the same keys and values (one sequence's new tokens, each over the positions up to its own).
// The keys and values are repacked once per call into the layouts the CPU's bfloat16 dot product takes, so that each
// row's scores and weighted sums are plain vector products without horizontal sums: keys as
// [blocks of 32][dim / 2][32 keys][2] (16 keys' scores in each register), values as [key pairs][dim][2]. The softmax's
// weights are rounded to bfloat16 for the weighted sum, as PyTorch's CPU flash attention does for bfloat16.
constexpr int KEY_BLOCK = 32;
constexpr int PACKED_HEADS = 6;  // query heads handled together: 6 x 4 registers of sums for the weighted values

using Pair = uint32_t;  // two bfloat16 values, as the dot product reads them

__m512bh broadcast_pair(const void* p) {  // the pair at p in all 16 lanes
  Pair word;
  std::memcpy(&word, p, sizeof(Pair));
  return (__m512bh)_mm512_set1_epi32((int)word);
}

// keys [n, dim] (`stride` elements a key) -> [ceil(n / 32)][dim / 2][32] pairs; values -> [ceil(n / 2)][dim] pairs;
// past n, zeros.
void pack_head(const c10::BFloat16* keys, const c10::BFloat16* values, int64_t stride, int64_t n, int64_t dim,
               Pair* kp, Pair* vp) {
  int64_t half = dim / 2, blocks = (n + KEY_BLOCK - 1) / KEY_BLOCK;
  for (int64_t b = 0; b < blocks; b++) {
    for (int64_t j = 0; j < KEY_BLOCK; j++) {
      int64_t t = b * KEY_BLOCK + j;
      const c10::BFloat16* key = keys + t * stride;
      for (int64_t i = 0; i < half; i++) {
        Pair word = 0;
        if (t < n) std::memcpy(&word, key + 2 * i, sizeof(Pair));
        kp[(b * half + i) * KEY_BLOCK + j] = word;
      }
    }
  }
  for (int64_t t = 0; t < n; t += 2) {
    const c10::BFloat16* first = values + t * stride;
    for (int64_t d = 0; d < dim; d++) {
      uint16_t lo, hi = 0;
      std::memcpy(&lo, first + d, 2);
      if (t + 1 < n) std::memcpy(&hi, first + stride + d, 2);
      vp[(t / 2) * dim + d] = (Pair)lo | ((Pair)hi << 16);
    }
  }
}

// M query heads of one row (`q`, dim apart) over the first n packed keys and values: out[m] = softmax(scale x q[m] .
// keys) . values. `scores` holds M x ceil(n / 32) x 32 floats, `weights` M x (n + 1) bfloat16 pairs' halves.
template <int M>
void attend_packed(const c10::BFloat16* q, const Pair* kp, const Pair* vp, int64_t n, int64_t dim, float scale,
                   float* scores, uint16_t* weights, c10::BFloat16* out) {
  int64_t half = dim / 2, blocks = (n + KEY_BLOCK - 1) / KEY_BLOCK, width = blocks * KEY_BLOCK, pairs = (n + 1) / 2;
  for (int64_t b = 0; b < blocks; b++) {
    __m512 acc[M][2];  // the scores of keys 0-15 and 16-31 of the block
    for (int m = 0; m < M; m++) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
    for (int64_t i = 0; i < half; i++) {
      const Pair* k = kp + (b * half + i) * KEY_BLOCK;
      __m512bh k0 = (__m512bh)_mm512_loadu_si512((const void*)k);
      __m512bh k1 = (__m512bh)_mm512_loadu_si512((const void*)(k + 16));
      for (int m = 0; m < M; m++) {
        __m512bh both = broadcast_pair(q + m * dim + 2 * i);
        acc[m][0] = _mm512_dpbf16_ps(acc[m][0], both, k0);
        acc[m][1] = _mm512_dpbf16_ps(acc[m][1], both, k1);
      }
    }
    for (int m = 0; m < M; m++) {
      _mm512_storeu_ps(scores + m * width + b * KEY_BLOCK, acc[m][0]);
      _mm512_storeu_ps(scores + m * width + b * KEY_BLOCK + 16, acc[m][1]);
    }
  }
  float total[M];
  for (int m = 0; m < M; m++) {
    float* s = scores + m * width;
    total[m] = softmax_unnormalized(s, n, scale);
    uint16_t* w = weights + m * 2 * pairs;
    int64_t t = 0;
    for (; t + 16 <= n; t += 16) {  // rounded to nearest even, as c10::BFloat16
      _mm256_storeu_si256((__m256i*)(w + t), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(s + t)));
    }
    for (; t < n; t++) {
      c10::BFloat16 rounded_weight(s[t]);
      std::memcpy(w + t, &rounded_weight, 2);
    }
    if (n % 2) w[n] = 0;
  }
  for (int64_t d0 = 0; d0 < dim; d0 += 64) {  // 64 of the output's values at a time: M x 4 registers of sums
    __m512 acc[M][4];
    for (int m = 0; m < M; m++) {
      for (int j = 0; j < 4; j++) acc[m][j] = _mm512_setzero_ps();
    }
    for (int64_t t = 0; t < pairs; t++) {
      __m512bh v[4];
      for (int j = 0; j < 4; j++) v[j] = (__m512bh)_mm512_loadu_si512((const void*)(vp + t * dim + d0 + 16 * j));
      for (int m = 0; m < M; m++) {
        __m512bh both = broadcast_pair(weights + m * 2 * pairs + 2 * t);
        for (int j = 0; j < 4; j++) acc[m][j] = _mm512_dpbf16_ps(acc[m][j], both, v[j]);
      }
    }
    for (int m = 0; m < M; m++) {
      for (int j = 0; j < 4; j++) {
        float sums[16];
        _mm512_storeu_ps(sums, acc[m][j]);
        for (int l = 0; l < 16; l++) out[m * dim + d0 + 16 * j + l] = narrow<c10::BFloat16>(sums[l] / total[m]);
      }
    }
  }
}

// The query heads [g, g + count) of one row, `count` <= PACKED_HEADS.
void attend_packed_heads(int64_t count, const c10::BFloat16* q, const Pair* kp, const Pair* vp, int64_t n,
                         int64_t dim, float scale, float* scores, uint16_t* weights, c10::BFloat16* out) {
  switch (count) {
    case 1: return attend_packed<1>(q, kp, vp, n, dim, scale, scores, weights, out);
    case 2: return attend_packed<2>(q, kp, vp, n, dim, scale, scores, weights, out);
    case 3: return attend_packed<3>(q, kp, vp, n, dim, scale, scores, weights, out);
    case 4: return attend_packed<4>(q, kp, vp, n, dim, scale, scores, weights, out);
    case 5: return attend_packed<5>(q, kp, vp, n, dim, scale, scores, weights, out);
    default: return attend_packed<6>(q, kp, vp, n, dim, scale, scores, weights, out);
  }
}

// attention_typed for rows that share their keys and values (stride 0 between rows), bfloat16, dim a multiple of 64.
void attention_shared(const torch::Tensor& q, const torch::Tensor& keys, const torch::Tensor& values,
                      const int64_t* counts, float scale, torch::Tensor& out) {
  int64_t rows = q.size(0), heads = q.size(1), group = q.size(2), dim = q.size(3), stride = keys.stride(2);
  int64_t n = 0;
  for (int64_t r = 0; r < rows; r++) n = std::max(n, counts[r]);
  int64_t blocks = (n + KEY_BLOCK - 1) / KEY_BLOCK, kp_size = blocks * KEY_BLOCK * dim / 2, vp_size = (n + 1) / 2 * dim;
  std::vector<Pair> kp(heads * kp_size), vp(heads * vp_size);
  const auto* kd = keys.data_ptr<c10::BFloat16>();
  const auto* vd = values.data_ptr<c10::BFloat16>();
  at::parallel_for(0, heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t h = begin; h < end; h++) {
      pack_head(kd + h * keys.stride(1), vd + h * values.stride(1), stride, n, dim, kp.data() + h * kp_size,
                vp.data() + h * vp_size);
    }
  });
  int64_t chunks = (group + PACKED_HEADS - 1) / PACKED_HEADS, per_chunk = (group + chunks - 1) / chunks;
  const auto* qd = q.data_ptr<c10::BFloat16>();
  auto* od = out.data_ptr<c10::BFloat16>();
  at::parallel_for(0, rows * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(per_chunk * blocks * KEY_BLOCK);
    std::vector<uint16_t> weights(per_chunk * (n + 1));
    for (int64_t item = begin; item < end; item++) {
      int64_t r = item / heads, h = item % heads;
      for (int64_t g = 0; g < group; g += per_chunk) {
        attend_packed_heads(std::min(per_chunk, group - g), qd + (item * group + g) * dim, kp.data() + h * kp_size,
                            vp.data() + h * vp_size, counts[r], dim, scale, scores.data(), weights.data(),
                            od + (item * group + g) * dim);
      }
    }
  });
}
#endif

// Rows that share their keys and values (prefill's new tokens) and are many enough to repay repacking them.
constexpr int64_t SHARED_MIN_ROWS = 8;

bool shared_path(const torch::Tensor& q, const torch::Tensor& keys, const torch::Tensor& values) {
#if defined(__AVX512BF16__)
  return q.scalar_type() == torch::kBFloat16 && q.size(0) >= SHARED_MIN_ROWS && q.size(3) % 64 == 0 &&
         keys.stride(0) == 0 && values.stride(0) == 0;
#else
  return false;
#endif
}

template <typename T>
void attention_typed(const torch::Tensor& q, const torch::Tensor& keys, const torch::Tensor& values,
                     const int64_t* counts, float scale, torch::Tensor& out) {
  int64_t rows = q.size(0), heads = q.size(1), group = q.size(2), dim = q.size(3);
  const T* qd = q.data_ptr<T>();
  const T* kd = keys.data_ptr<T>();
  const T* vd = values.data_ptr<T>();
  T* od = out.data_ptr<T>();
  at::parallel_for(0, rows * heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; item++) {
      int64_t r = item / heads, h = item % heads;
      attend_group(qd + item * group * dim, kd + r * keys.stride(0) + h * keys.stride(1),
                   vd + r * values.stride(0) + h * values.stride(1), keys.stride(2), counts[r], group, dim, scale,
                   od + item * group * dim);
    }
  });
}

bool supported(const torch::Tensor& t) {
  return t.device().is_cpu() && (t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kBFloat16);
}

}  // namespace

// q [rows, heads, dim] and k [rows, kv_heads, dim], contiguous, rotated in place by cos/sin [rows, dim] (each row's
// position), all of one dtype.
void rope_(torch::Tensor q, torch::Tensor k, torch::Tensor cos, torch::Tensor sin) {
  TORCH_CHECK(supported(q) && q.dim() == 3 && k.dim() == 3 && q.is_contiguous() && k.is_contiguous(),
              "rope_ takes contiguous float32 or bfloat16 q and k [rows, heads, dim]");
  torch::Tensor c = cos.contiguous(), s = sin.contiguous();
  for (const torch::Tensor& t : {k, c, s}) TORCH_CHECK(t.scalar_type() == q.scalar_type(), "rope_: dtypes differ");
  TORCH_CHECK(c.numel() == q.size(0) * q.size(2) && s.numel() == c.numel() && k.size(0) == q.size(0) &&
                  k.size(2) == q.size(2) && q.size(2) % 2 == 0, "rope_: cos and sin must be [rows, dim]");
  if (q.scalar_type() == torch::kFloat) {
    rope_typed<float>(q, c, s);
    rope_typed<float>(k, c, s);
  } else {
    rope_typed<c10::BFloat16>(q, c, s);
    rope_typed<c10::BFloat16>(k, c, s);
  }
}

// q [rows, kv_heads, group, dim] (the query heads that share each KV head); keys, values [rows, kv_heads, width,
// dim] with dim contiguous; counts [rows]: row r attends to positions [0, counts[r]). Returns [rows, kv_heads,
// group, dim] in q's dtype. `shared`: rows that share one sequence's keys (stride 0) may take the repacked path,
// whose softmax weights are rounded to bfloat16 (prefill); without it every row computes what it would alone (decode,
// and a speculative draft's verification, whose rows must equal decode steps).
torch::Tensor attention(torch::Tensor q, torch::Tensor keys, torch::Tensor values, torch::Tensor counts,
                        double scale, bool shared) {
  TORCH_CHECK(supported(q) && q.dim() == 4 && keys.dim() == 4 && values.dim() == 4,
              "attention takes float32 or bfloat16 q [rows, kv_heads, group, dim] and keys, values [rows, kv_heads, "
              "width, dim]");
  q = q.contiguous();
  int64_t rows = q.size(0), heads = q.size(1), dim = q.size(3);
  for (const torch::Tensor& t : {keys, values}) {
    TORCH_CHECK(t.scalar_type() == q.scalar_type() && t.size(0) == rows && t.size(1) == heads && t.size(3) == dim &&
                    t.stride(3) == 1, "attention: keys and values must match q, with dim contiguous");
  }
  TORCH_CHECK(keys.strides() == values.strides() && dim % LANES == 0, "attention: keys and values strides differ, or "
              "dim is not a multiple of ", LANES);
  torch::Tensor n = counts.to(torch::kLong).contiguous();
  TORCH_CHECK(n.numel() == rows, "attention: one count a row");
  const int64_t* c = n.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; r++) TORCH_CHECK(c[r] >= 1 && c[r] <= keys.size(2), "attention: count out of range");
  torch::Tensor out = torch::empty_like(q);
  if (q.scalar_type() == torch::kFloat) {
    attention_typed<float>(q, keys, values, c, (float)scale, out);
  } else if (shared && shared_path(q, keys, values)) {
#if defined(__AVX512BF16__)
    attention_shared(q, keys, values, c, (float)scale, out);
#endif
  } else {
    attention_typed<c10::BFloat16>(q, keys, values, c, (float)scale, out);
  }
  return out;
}

// A Llama/Qwen2 model's decoder layers on GGUF blocks, for a decode step on a preallocated KV buffer: per layer the
// same kernel calls, in the same order, as engine.decode_step's loop (RMSNorm and q/k/v, rotary embedding, the new
// keys and values into the buffer, attention, o plus the residual, RMSNorm and gated gate/up, down plus the
// residual), without a return to Python between them.
class DecodeLayers {
 public:
  // Per layer, in order: the blocks, GGML types and biases of q, k, v, o, gate, up and down, and the RMSNorm weights
  // before q/k/v and before gate/up.
  DecodeLayers(std::vector<torch::Tensor> blocks, std::vector<int64_t> types,
               std::vector<c10::optional<torch::Tensor>> biases, std::vector<torch::Tensor> norms, double eps,
               int64_t kv_heads, int64_t head_dim, double scaling)
      : blocks_(std::move(blocks)), types_(std::move(types)), biases_(std::move(biases)), norms_(std::move(norms)),
        eps_(eps), kv_heads_(kv_heads), dim_(head_dim), scaling_(scaling) {
    TORCH_CHECK(blocks_.size() % PROJECTIONS == 0 && types_.size() == blocks_.size() &&
                    biases_.size() == blocks_.size() && norms_.size() == blocks_.size() / PROJECTIONS * 2,
                "DecodeLayers takes 7 projections and 2 norms a layer");
  }

  // h [rows, hidden]; cos, sin [rows, head_dim] (each row's position); counts [rows] (int64): row r's new token goes
  // to position counts[r] - 1 and attends to [0, counts[r]); keys, values [layers, rows, kv_heads, capacity,
  // head_dim]: the buffer. Returns h after the last layer.
  torch::Tensor step(torch::Tensor h, torch::Tensor cos, torch::Tensor sin, torch::Tensor counts, torch::Tensor keys,
                     torch::Tensor values) {
    int64_t rows = h.size(0), layers = (int64_t)blocks_.size() / PROJECTIONS;
    TORCH_CHECK(keys.dim() == 5 && keys.sizes() == values.sizes() && keys.size(0) == layers && keys.size(1) == rows &&
                    keys.size(2) == kv_heads_ && keys.size(4) == dim_ && keys.is_contiguous() &&
                    values.is_contiguous() && keys.scalar_type() == h.scalar_type() &&
                    values.scalar_type() == h.scalar_type() && counts.scalar_type() == torch::kLong &&
                    counts.numel() == rows,
                "step: keys and values must be contiguous [layers, rows, kv_heads, capacity, head_dim] buffers in h's "
                "dtype, counts int64 [rows]");
    const int64_t* c = counts.data_ptr<int64_t>();
    int64_t width = 0;
    for (int64_t r = 0; r < rows; r++) {
      TORCH_CHECK(c[r] >= 1 && c[r] <= keys.size(3), "step: count out of the buffer");
      width = std::max(width, c[r]);
    }
    for (int64_t layer = 0; layer < layers; layer++) {
      size_t at = layer * PROJECTIONS;
      auto project = [&](const torch::Tensor& x, size_t first, size_t count, c10::optional<torch::Tensor> norm,
                         bool gated, c10::optional<torch::Tensor> residual) {
        return mm_group(x, {blocks_.begin() + first, blocks_.begin() + first + count},
                        {types_.begin() + first, types_.begin() + first + count},
                        {biases_.begin() + first, biases_.begin() + first + count}, norm, eps_, gated, residual);
      };
      std::vector<torch::Tensor> qkv = project(h, at, 3, norms_[2 * layer], false, c10::nullopt);
      torch::Tensor q = qkv[0].view({rows, -1, dim_}), k = qkv[1].view({rows, kv_heads_, dim_});
      rope_(q, k, cos, sin);
      torch::Tensor kl = keys[layer], vl = values[layer];
      int64_t capacity = kl.size(2), bytes = dim_ * kl.element_size();
      for (int64_t r = 0; r < rows; r++) {  // the new token's keys and values at its position
        for (int64_t g = 0; g < kv_heads_; g++) {
          int64_t from = (r * kv_heads_ + g) * bytes, to = ((r * kv_heads_ + g) * capacity + c[r] - 1) * bytes;
          std::memcpy(static_cast<char*>(kl.data_ptr()) + to, static_cast<const char*>(k.data_ptr()) + from, bytes);
          std::memcpy(static_cast<char*>(vl.data_ptr()) + to, static_cast<const char*>(qkv[2].data_ptr()) + from,
                      bytes);
        }
      }
      torch::Tensor o = attention(q.view({rows, kv_heads_, -1, dim_}), kl.narrow(2, 0, width),
                                  vl.narrow(2, 0, width), counts, scaling_, false);
      h = project(o.view({rows, -1}), at + 3, 1, c10::nullopt, false, h)[0];
      torch::Tensor act = project(h, at + 4, 2, norms_[2 * layer + 1], true, c10::nullopt)[0];
      h = project(act, at + 6, 1, c10::nullopt, false, h)[0];
    }
    return h;
  }

 private:
  static constexpr size_t PROJECTIONS = 7;
  std::vector<torch::Tensor> blocks_;
  std::vector<int64_t> types_;
  std::vector<c10::optional<torch::Tensor>> biases_;
  std::vector<torch::Tensor> norms_;
  double eps_;
  int64_t kv_heads_, dim_;
  double scaling_;
};

void register_decode_ops(pybind11::module& m) {
  m.def("rope_", &rope_, "rotary position embedding of q and k [rows, heads, dim], in place");
  m.def("attention", [](torch::Tensor q, torch::Tensor keys, torch::Tensor values, torch::Tensor counts,
                        double scale) { return attention(q, keys, values, counts, scale, false); },
        "attention of one query token a row over its first counts[r] keys and values, each row as it would alone");
  m.def("shared_attention", [](torch::Tensor q, torch::Tensor keys, torch::Tensor values, torch::Tensor counts,
                               double scale) { return attention(q, keys, values, counts, scale, true); },
        "attention as above, for rows of one sequence (keys of stride 0): repacked where bfloat16 is native (prefill)");
  // module_local: each build of these kernels (engine.gguf.blocks.kernels for another -march) has its own class
  pybind11::class_<DecodeLayers>(m, "DecodeLayers", pybind11::module_local())
      .def(pybind11::init<std::vector<torch::Tensor>, std::vector<int64_t>,
                          std::vector<c10::optional<torch::Tensor>>, std::vector<torch::Tensor>, double, int64_t,
                          int64_t, double>())
      .def("step", &DecodeLayers::step, "one decode step through every layer; h after the last");
}
