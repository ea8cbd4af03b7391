// Matrix products on a GGUF's own k-quant blocks (Q4_K and Q6_K, 256 weights a block), read as the file stores
// them: nothing is re-quantized, so the weights are exactly the file's.
//
// mm: a few rows of activations (decode) against the blocks. Each activation row is quantized to int8 in blocks
// of 256 (one float scale a block, and the sum of every 16 values for the blocks' minimums and offsets), the way
// llama.cpp's CPU path does; each weight row is then one pass over its blocks with integer dot products (AVX2
// where the compiler targets it, plain C++ otherwise), parallel over the weight rows.
// dequant: the blocks widened to float32 or bfloat16, for steps with many rows (prefill), which then run as a
// plain matmul (AVX-512: 32 codes at a time, straight into the output row).
#include "kernels.h"

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

constexpr int QK = 256;
constexpr int Q4K_BYTES = 144;  // d, dmin (fp16), 12 bytes of 6-bit scales and minimums, 128 bytes of 4-bit codes
constexpr int Q6K_BYTES = 210;  // 128 bytes of low 4 bits, 64 of high 2 bits, 16 int8 scales, d (fp16)
enum BlockType { Q4_K = 12, Q6_K = 14 };  // GGML's type numbers

float fp16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) { man <<= 1; exp--; }
      bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000 | (man << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t read_u16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }

// Q4_K's eight 6-bit scales and minimums, packed in 12 bytes.
void q4k_scales(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; j++) {
    sc[j] = s[j] & 63;
    mn[j] = s[j + 4] & 63;
    sc[j + 4] = (s[j + 8] & 0x0f) | ((s[j] >> 6) << 4);
    mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
  }
}

// One activation row quantized: int8 values, a scale per 256, the sums of each 16 and each 32 values (int16).
struct QuantRow {
  std::vector<int8_t> q;
  std::vector<int8_t> q4;  // (AVX-512) each 128 values as 0-31, 64-95, 32-63, 96-127: the order of Q4_K's nibbles
  std::vector<float> d;
  std::vector<int16_t> sums16, sums32;
};

template <typename T>
float to_float(T v) { return static_cast<float>(v); }

void quantize_row(const float* x, int64_t k, QuantRow& r) {
  int64_t nb = k / QK;
  r.q.resize(k);
  r.d.resize(nb);
  r.sums16.resize(k / 16);
  r.sums32.resize(k / 32);
  for (int64_t b = 0; b < nb; b++) {
    const float* xb = x + b * QK;
    int8_t* qb = r.q.data() + b * QK;
    float amax = 0.f;
    for (int i = 0; i < QK; i++) amax = std::max(amax, std::fabs(xb[i]));
    float id = amax > 0.f ? 127.f / amax : 0.f;
    r.d[b] = amax / 127.f;
#if defined(__AVX2__)
    const __m256 scale = _mm256_set1_ps(id);
    for (int i = 0; i < QK; i += 32) {  // rounds to nearest even, as nearbyint
      __m256i v0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i), scale));
      __m256i v1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 8), scale));
      __m256i v2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 16), scale));
      __m256i v3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 24), scale));
      __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v0, v1), _mm256_packs_epi32(v2, v3));
      p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));  // undo the packs' lane order
      _mm256_storeu_si256((__m256i*)(qb + i), p);
    }
#else
    for (int i = 0; i < QK; i++) qb[i] = (int8_t)std::nearbyint(xb[i] * id);
#endif
    for (int s = 0; s < QK / 16; s++) {
      int sum = 0;
      for (int i = 0; i < 16; i++) sum += qb[s * 16 + i];
      r.sums16[b * (QK / 16) + s] = (int16_t)sum;
    }
    for (int s = 0; s < QK / 32; s++) {
      r.sums32[b * (QK / 32) + s] = r.sums16[b * (QK / 16) + 2 * s] + r.sums16[b * (QK / 16) + 2 * s + 1];
    }
  }
#if defined(__AVX512BW__)
  r.q4.resize(k);
  for (int64_t c = 0; c < k; c += 128) {
    const int8_t* from = r.q.data() + c;
    int8_t* to = r.q4.data() + c;
    std::memcpy(to, from, 32);
    std::memcpy(to + 32, from + 64, 32);
    std::memcpy(to + 64, from + 32, 32);
    std::memcpy(to + 96, from + 96, 32);
  }
#endif
}

float half_to_float(const uint8_t* p) {
#if defined(__F16C__)
  return _cvtsh_ss(read_u16(p));
#else
  return fp16_to_f32(read_u16(p));
#endif
}

#if defined(__AVX2__)
float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// A shuffle that fills every 16-bit lane of each 128-bit half with word `lo` (low half) or `hi` (high half).
__m256i word_broadcast(int lo, int hi) {
  return _mm256_setr_epi8(2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo,
                          2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * hi, 2 * hi + 1,
                          2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi,
                          2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1);
}

float hsum128(__m128 v) {
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
}

// A Q4_K block's two factors times the activation block's scale, and its eight 6-bit scales and minimums as 16-bit
// lanes (unpacked four at a time from their 12 bytes).
struct Q4KHeader {
  float d, dmin;
  __m128i scales, mins;
};

Q4KHeader q4k_header(const uint8_t* blk, float scale) {
  uint32_t s[3];
  std::memcpy(s, blk + 4, 12);
  uint32_t sc_lo = s[0] & 0x3f3f3f3f, mn_lo = s[1] & 0x3f3f3f3f;
  uint32_t sc_hi = (s[2] & 0x0f0f0f0f) | ((s[0] >> 2) & 0x30303030);
  uint32_t mn_hi = ((s[2] >> 4) & 0x0f0f0f0f) | ((s[1] >> 2) & 0x30303030);
  return {half_to_float(blk) * scale, half_to_float(blk + 2) * scale,
          _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)sc_hi, (int)sc_lo)),
          _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)mn_hi, (int)mn_lo))};
}

// Q6_K's codes (0-63, stored +32) for positions 128h + 32c + [0, 32), c = 0..3, from the block's low bits `ql` and
// high bits `qh`.
void q6k_codes(const uint8_t* ql, const uint8_t* qh, int h, __m256i codes[4]) {
  const __m256i low4 = _mm256_set1_epi8(0x0f), low2 = _mm256_set1_epi8(0x03), bits45 = _mm256_set1_epi8(0x30);
  __m256i l0 = _mm256_loadu_si256((const __m256i*)(ql + 64 * h));
  __m256i l1 = _mm256_loadu_si256((const __m256i*)(ql + 64 * h + 32));
  __m256i hb = _mm256_loadu_si256((const __m256i*)(qh + 32 * h));
  codes[0] = _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_slli_epi16(_mm256_and_si256(hb, low2), 4));
  codes[1] = _mm256_or_si256(_mm256_and_si256(l1, low4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), bits45));
  codes[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), _mm256_and_si256(hb, bits45));
  codes[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                             _mm256_and_si256(_mm256_srli_epi16(hb, 2), bits45));
}
#endif

#if defined(__AVX512BW__)
// A shuffle that fills each 16-bit lane of the two low 128-bit quarters with word `lo`, of the two high ones with
// word `hi`.
__m512i word_broadcast512(int lo, int hi) {
  __m256i a = word_broadcast(lo, lo), b = word_broadcast(hi, hi);
  return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}
#endif

// The dot product of one weight row with one quantized activation row. (Interleaving several weight rows to share
// the activation loads measured slower here: 8 GB/s against 26 on the LM head.)
float dot_q4k(const uint8_t* w, const QuantRow& a, int64_t nb) {
#if defined(__AVX512BW__)
  // 64 bytes of codes at a time: their low nibbles are sub-blocks 4i and 4i+2, their high nibbles 4i+1 and 4i+3,
  // against the activations reordered to match (QuantRow::q4)
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  const __m512i pick[4] = {word_broadcast512(0, 2), word_broadcast512(1, 3), word_broadcast512(4, 6),
                           word_broadcast512(5, 7)};
  __m512 acc = _mm512_setzero_ps();
  __m128 acc_min = _mm_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    const int8_t* q = a.q4.data() + b * QK;
    const __m512i act[4] = {_mm512_loadu_si512((const void*)q), _mm512_loadu_si512((const void*)(q + 64)),
                            _mm512_loadu_si512((const void*)(q + 128)), _mm512_loadu_si512((const void*)(q + 192))};
    const __m128i sums = _mm_loadu_si128((const __m128i*)(a.sums32.data() + b * 8));
    const uint8_t* blk = w + b * Q4K_BYTES;
    Q4KHeader h = q4k_header(blk, a.d[b]);
    acc_min = _mm_fmadd_ps(_mm_set1_ps(h.dmin), _mm_cvtepi32_ps(_mm_madd_epi16(h.mins, sums)), acc_min);
    __m512i scales = _mm512_broadcast_i32x4(h.scales);
    __m512i isum = _mm512_setzero_si512();
    for (int i = 0; i < 2; i++) {
      __m512i codes = _mm512_loadu_si512((const void*)(blk + 16 + 64 * i));
      __m512i lo = _mm512_and_si512(codes, low4), hi = _mm512_and_si512(_mm512_srli_epi16(codes, 4), low4);
      __m512i plo = _mm512_madd_epi16(_mm512_maddubs_epi16(lo, act[2 * i]), _mm512_shuffle_epi8(scales, pick[2 * i]));
      __m512i phi = _mm512_madd_epi16(_mm512_maddubs_epi16(hi, act[2 * i + 1]),
                                      _mm512_shuffle_epi8(scales, pick[2 * i + 1]));
      isum = _mm512_add_epi32(isum, _mm512_add_epi32(plo, phi));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(h.d), _mm512_cvtepi32_ps(isum), acc);
  }
  return _mm512_reduce_add_ps(acc) - hsum128(acc_min);
#elif defined(__AVX2__)
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i pick[8] = {word_broadcast(0, 0), word_broadcast(1, 1), word_broadcast(2, 2), word_broadcast(3, 3),
                           word_broadcast(4, 4), word_broadcast(5, 5), word_broadcast(6, 6), word_broadcast(7, 7)};
  __m256 acc = _mm256_setzero_ps();
  __m128 acc_min = _mm_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    const int8_t* q = a.q.data() + b * QK;
    const __m128i sums = _mm_loadu_si128((const __m128i*)(a.sums32.data() + b * 8));
    const uint8_t* blk = w + b * Q4K_BYTES;
    Q4KHeader h = q4k_header(blk, a.d[b]);
    acc_min = _mm_fmadd_ps(_mm_set1_ps(h.dmin), _mm_cvtepi32_ps(_mm_madd_epi16(h.mins, sums)), acc_min);
    __m256i scales = _mm256_broadcastsi128_si256(h.scales);
    __m256i isum = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
      __m256i codes = _mm256_loadu_si256((const __m256i*)(blk + 16 + 32 * j));
      __m256i lo = _mm256_and_si256(codes, low4), hi = _mm256_and_si256(_mm256_srli_epi16(codes, 4), low4);
      __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i*)(q + 64 * j)));
      __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i*)(q + 64 * j + 32)));
      plo = _mm256_madd_epi16(plo, _mm256_shuffle_epi8(scales, pick[2 * j]));
      phi = _mm256_madd_epi16(phi, _mm256_shuffle_epi8(scales, pick[2 * j + 1]));
      isum = _mm256_add_epi32(isum, _mm256_add_epi32(plo, phi));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h.d), _mm256_cvtepi32_ps(isum), acc);
  }
  return hsum(acc) - hsum128(acc_min);
#else
  float total = 0.f;
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t* blk = w + b * Q4K_BYTES;
    float d = half_to_float(blk) * a.d[b], dmin = half_to_float(blk + 2) * a.d[b];
    uint8_t sc[8], mn[8];
    q4k_scales(blk + 4, sc, mn);
    const uint8_t* qs = blk + 16;
    const int8_t* q = a.q.data() + b * QK;
    int32_t isum = 0, mins = 0;
    for (int j = 0; j < 4; j++) {
      int32_t lo = 0, hi = 0;
      for (int l = 0; l < 32; l++) {
        lo += (qs[32 * j + l] & 0x0f) * q[64 * j + l];
        hi += (qs[32 * j + l] >> 4) * q[64 * j + 32 + l];
      }
      isum += sc[2 * j] * lo + sc[2 * j + 1] * hi;
    }
    for (int j = 0; j < 8; j++) mins += mn[j] * a.sums32[b * 8 + j];
    total += d * (float)isum - dmin * (float)mins;
  }
  return total;
#endif
}

float dot_q6k(const uint8_t* w, const QuantRow& a, int64_t nb) {
#if defined(__AVX2__)
  const __m256i pick[4] = {word_broadcast(0, 1), word_broadcast(2, 3), word_broadcast(4, 5), word_broadcast(6, 7)};
  __m256 acc = _mm256_setzero_ps(), acc_off = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    const int8_t* q = a.q.data() + b * QK;
    const __m256i sums = _mm256_loadu_si256((const __m256i*)(a.sums16.data() + b * 16));
    const uint8_t* blk = w + b * Q6K_BYTES;
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    float d = half_to_float(blk + 208) * a.d[b];
    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(blk + 192)));  // sc[0..7] | sc[8..15]
    // the codes are stored +32: subtract 32 x scale x the sum of each 16 activations
    acc_off = _mm256_fmadd_ps(_mm256_set1_ps(32.f * d), _mm256_cvtepi32_ps(_mm256_madd_epi16(sc16, sums)),
                                 acc_off);
    __m256i isum = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
      __m256i scales = _mm256_permute2x128_si256(sc16, sc16, h == 0 ? 0x00 : 0x11);
      __m256i codes[4];
      q6k_codes(ql, qh, h, codes);
      for (int c = 0; c < 4; c++) {
        __m256i p = _mm256_maddubs_epi16(codes[c], _mm256_loadu_si256((const __m256i*)(q + 128 * h + 32 * c)));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, _mm256_shuffle_epi8(scales, pick[c])));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
  }
  return hsum(acc) - hsum(acc_off);
#else
  float total = 0.f;
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t* blk = w + b * Q6K_BYTES;
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    const int8_t* sc = (const int8_t*)(blk + 192);
    float d = half_to_float(blk + 208) * a.d[b];
    const int8_t* q = a.q.data() + b * QK;
    int32_t isum = 0, offset = 0;
    for (int j = 0; j < 16; j++) offset += sc[j] * a.sums16[b * 16 + j];
    for (int h = 0; h < 2; h++) {
      for (int l = 0; l < 32; l++) {
        int c0 = (ql[64 * h + l] & 0x0f) | (((qh[32 * h + l] >> 0) & 3) << 4);
        int c1 = (ql[64 * h + 32 + l] & 0x0f) | (((qh[32 * h + l] >> 2) & 3) << 4);
        int c2 = (ql[64 * h + l] >> 4) | (((qh[32 * h + l] >> 4) & 3) << 4);
        int c3 = (ql[64 * h + 32 + l] >> 4) | (((qh[32 * h + l] >> 6) & 3) << 4);
        int s = l / 16;
        isum += sc[8 * h + s] * c0 * q[128 * h + l] + sc[8 * h + 2 + s] * c1 * q[128 * h + 32 + l] +
                sc[8 * h + 4 + s] * c2 * q[128 * h + 64 + l] + sc[8 * h + 6 + s] * c3 * q[128 * h + 96 + l];
      }
    }
    total += d * (float)isum - d * 32.f * (float)offset;
  }
  return total;
#endif
}

#if defined(__AVX2__)
// One weight row against R activation rows at once (a verification step of speculative decoding runs several
// positions of one sequence): each block's codes and scales are unpacked once and multiplied with every row. Per
// row these are dot_q4k's and dot_q6k's AVX2 operations in the same order, so each result is bit for bit the one
// the single-row function gives.
template <int R>
void dot_q6k_rows(const uint8_t* w, const QuantRow* const* a, int64_t nb, float* out) {
  const __m256i pick[4] = {word_broadcast(0, 1), word_broadcast(2, 3), word_broadcast(4, 5), word_broadcast(6, 7)};
  __m256 acc[R], acc_off[R];
  for (int i = 0; i < R; i++) acc[i] = acc_off[i] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t* blk = w + b * Q6K_BYTES;
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    float d_block = half_to_float(blk + 208);
    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(blk + 192)));
    __m256i isum[R];
    for (int i = 0; i < R; i++) {
      float d = d_block * a[i]->d[b];
      const __m256i sums = _mm256_loadu_si256((const __m256i*)(a[i]->sums16.data() + b * 16));
      acc_off[i] = _mm256_fmadd_ps(_mm256_set1_ps(32.f * d), _mm256_cvtepi32_ps(_mm256_madd_epi16(sc16, sums)),
                                   acc_off[i]);
      isum[i] = _mm256_setzero_si256();
    }
    for (int h = 0; h < 2; h++) {
      __m256i scales = _mm256_permute2x128_si256(sc16, sc16, h == 0 ? 0x00 : 0x11);
      __m256i codes[4];
      q6k_codes(ql, qh, h, codes);
      for (int c = 0; c < 4; c++) {
        __m256i sc = _mm256_shuffle_epi8(scales, pick[c]);
        for (int i = 0; i < R; i++) {
          const int8_t* q = a[i]->q.data() + b * QK;
          __m256i p = _mm256_maddubs_epi16(codes[c], _mm256_loadu_si256((const __m256i*)(q + 128 * h + 32 * c)));
          isum[i] = _mm256_add_epi32(isum[i], _mm256_madd_epi16(p, sc));
        }
      }
    }
    for (int i = 0; i < R; i++) {
      acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d_block * a[i]->d[b]), _mm256_cvtepi32_ps(isum[i]), acc[i]);
    }
  }
  for (int i = 0; i < R; i++) out[i] = hsum(acc[i]) - hsum(acc_off[i]);
}
#endif

#if defined(__AVX2__) && !defined(__AVX512BW__)
template <int R>
void dot_q4k_rows(const uint8_t* w, const QuantRow* const* a, int64_t nb, float* out) {
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i pick[8] = {word_broadcast(0, 0), word_broadcast(1, 1), word_broadcast(2, 2), word_broadcast(3, 3),
                           word_broadcast(4, 4), word_broadcast(5, 5), word_broadcast(6, 6), word_broadcast(7, 7)};
  __m256 acc[R];
  __m128 acc_min[R];
  for (int i = 0; i < R; i++) acc[i] = _mm256_setzero_ps(), acc_min[i] = _mm_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t* blk = w + b * Q4K_BYTES;
    Q4KHeader h[R];
    __m256i isum[R];
    for (int i = 0; i < R; i++) {
      h[i] = q4k_header(blk, a[i]->d[b]);
      const __m128i sums = _mm_loadu_si128((const __m128i*)(a[i]->sums32.data() + b * 8));
      acc_min[i] = _mm_fmadd_ps(_mm_set1_ps(h[i].dmin), _mm_cvtepi32_ps(_mm_madd_epi16(h[i].mins, sums)), acc_min[i]);
      isum[i] = _mm256_setzero_si256();
    }
    __m256i scales = _mm256_broadcastsi128_si256(h[0].scales);
    for (int j = 0; j < 4; j++) {
      __m256i codes = _mm256_loadu_si256((const __m256i*)(blk + 16 + 32 * j));
      __m256i lo = _mm256_and_si256(codes, low4), hi = _mm256_and_si256(_mm256_srli_epi16(codes, 4), low4);
      __m256i sc_lo = _mm256_shuffle_epi8(scales, pick[2 * j]), sc_hi = _mm256_shuffle_epi8(scales, pick[2 * j + 1]);
      for (int i = 0; i < R; i++) {
        const int8_t* q = a[i]->q.data() + b * QK;
        __m256i plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i*)(q + 64 * j))),
                                        sc_lo);
        __m256i phi = _mm256_madd_epi16(
            _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i*)(q + 64 * j + 32))), sc_hi);
        isum[i] = _mm256_add_epi32(isum[i], _mm256_add_epi32(plo, phi));
      }
    }
    for (int i = 0; i < R; i++) acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(h[i].d), _mm256_cvtepi32_ps(isum[i]), acc[i]);
  }
  for (int i = 0; i < R; i++) out[i] = hsum(acc[i]) - hsum128(acc_min[i]);
}
#endif

// Weight row `w` against activation rows [first, first + R) of `rows`, into out[i * n] for each: R at a time where
// there is a multi-row kernel for the type, else one by one.
template <int R>
void dot_group(const uint8_t* w, int64_t type, const std::vector<QuantRow>& rows, size_t first, int64_t nb,
               int64_t n, float* out) {
  float got[R];
  const QuantRow* a[R];
  for (int i = 0; i < R; i++) a[i] = &rows[first + i];
#if defined(__AVX2__)
  if (type == Q6_K) {
    dot_q6k_rows<R>(w, a, nb, got);
    for (int i = 0; i < R; i++) out[(first + i) * n] = got[i];
    return;
  }
#endif
#if defined(__AVX2__) && !defined(__AVX512BW__)
  dot_q4k_rows<R>(w, a, nb, got);
  for (int i = 0; i < R; i++) out[(first + i) * n] = got[i];
  return;
#endif
  for (int i = 0; i < R; i++) {
    out[(first + i) * n] = type == Q4_K ? dot_q4k(w, *a[i], nb) : dot_q6k(w, *a[i], nb);
  }
}

// Weight rows [0, n) (`stride` bytes a row) against each activation row: out[i * n + r]. Each weight row is read
// from memory once and used for every activation row while it is in cache, up to four rows per pass over its blocks.
void dot_rows(const uint8_t* w, int64_t stride, int64_t n, int64_t type, const std::vector<QuantRow>& rows,
              int64_t nb, float* out) {
  for (int64_t r = 0; r < n; r++) {
    const uint8_t* row = w + r * stride;
    size_t i = 0, m = rows.size();
    if (m > 1) {
      for (; i + 4 <= m; i += 4) dot_group<4>(row, type, rows, i, nb, n, out + r);
      if (m - i == 3) dot_group<3>(row, type, rows, i, nb, n, out + r), i += 3;
      if (m - i == 2) dot_group<2>(row, type, rows, i, nb, n, out + r), i += 2;
    }
    for (; i < m; i++) {
      out[i * n + r] = type == Q4_K ? dot_q4k(row, rows[i], nb) : dot_q6k(row, rows[i], nb);
    }
  }
}

int64_t block_bytes(int64_t type) {
  TORCH_CHECK(type == Q4_K || type == Q6_K, "unsupported GGUF block type ", type);
  return type == Q4_K ? Q4K_BYTES : Q6K_BYTES;
}

void check_blocks(const torch::Tensor& blocks, int64_t type, int64_t k) {
  TORCH_CHECK(blocks.dtype() == torch::kUInt8 && blocks.dim() == 2 && blocks.is_contiguous(),
              "blocks must be a contiguous 2-d uint8 tensor");
  TORCH_CHECK(k % QK == 0 && blocks.size(1) == k / QK * block_bytes(type), "blocks do not hold rows of ", k);
}

// One block's codes (as signed bytes) and, per 16 weights, the factor and the amount subtracted: weight =
// factor x code - minimum, computed as the gguf package computes it (no fused multiply-add), so that the result
// is bit for bit the weights transformers loaded from the same file.
void block_codes(const uint8_t* blk, int64_t type, int8_t* codes, float* factor, float* minimum) {
  if (type == Q4_K) {
    float d = half_to_float(blk), dmin = half_to_float(blk + 2);
    uint8_t sc[8], mn[8];
    q4k_scales(blk + 4, sc, mn);
    const uint8_t* qs = blk + 16;
    for (int j = 0; j < 4; j++) {
      for (int l = 0; l < 32; l++) {
        codes[64 * j + l] = (int8_t)(qs[32 * j + l] & 0x0f);
        codes[64 * j + 32 + l] = (int8_t)(qs[32 * j + l] >> 4);
      }
    }
    for (int s = 0; s < 16; s++) {
      factor[s] = d * (float)sc[s / 2];
      minimum[s] = dmin * (float)mn[s / 2];
    }
  } else {
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    const int8_t* sc = (const int8_t*)(blk + 192);
    float d = half_to_float(blk + 208);
    for (int h = 0; h < 2; h++) {
      for (int l = 0; l < 32; l++) {
        codes[128 * h + l] = (int8_t)(((ql[64 * h + l] & 0x0f) | ((qh[32 * h + l] & 3) << 4)) - 32);
        codes[128 * h + 32 + l] = (int8_t)(((ql[64 * h + 32 + l] & 0x0f) | (((qh[32 * h + l] >> 2) & 3) << 4)) - 32);
        codes[128 * h + 64 + l] = (int8_t)(((ql[64 * h + l] >> 4) | (((qh[32 * h + l] >> 4) & 3) << 4)) - 32);
        codes[128 * h + 96 + l] = (int8_t)(((ql[64 * h + 32 + l] >> 4) | (((qh[32 * h + l] >> 6) & 3) << 4)) - 32);
      }
    }
    for (int s = 0; s < 16; s++) {
      factor[s] = d * (float)sc[s];
      minimum[s] = 0.f;
    }
  }
}

void widen_block(const int8_t* codes, const float* factor, const float* minimum, float* y) {
#if defined(__AVX2__)
  for (int s = 0; s < 16; s++) {
    __m256 f = _mm256_set1_ps(factor[s]), m = _mm256_set1_ps(minimum[s]);
    for (int i = 0; i < 16; i += 8) {
      __m256 c = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(codes + 16 * s + i))));
      _mm256_storeu_ps(y + 16 * s + i, _mm256_sub_ps(_mm256_mul_ps(f, c), m));
    }
  }
#else
  for (int i = 0; i < QK; i++) y[i] = factor[i / 16] * (float)codes[i] - minimum[i / 16];
#endif
}

// float32 -> bfloat16, rounding to nearest even as PyTorch does.
void to_bfloat16(const float* x, uint16_t* out, int64_t k) {
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
  auto rounded = [&](const float* from) {  // eight floats' bfloat16 bits, in the low half of each 32-bit lane
    __m256i v = _mm256_castps_si256(_mm256_loadu_ps(from));
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(v, 16), one);
    return _mm256_srli_epi32(_mm256_add_epi32(v, _mm256_add_epi32(bias, odd)), 16);
  };
  for (; i + 16 <= k; i += 16) {
    __m256i packed = _mm256_packus_epi32(rounded(x + i), rounded(x + i + 8));
    _mm256_storeu_si256((__m256i*)(out + i), _mm256_permute4x64_epi64(packed, 0xd8));
  }
#endif
  for (; i < k; i++) {
    uint32_t bits;
    std::memcpy(&bits, &x[i], 4);
    out[i] = (uint16_t)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
  }
}

#if defined(__AVX512F__)
void store16(__m512 v, float* out) { _mm512_storeu_ps(out, v); }

void store16(__m512 v, uint16_t* out) {  // bfloat16, rounded to nearest even as to_bfloat16
  __m512i bits = _mm512_castps_si512(v);
  __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  bits = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
  _mm256_storeu_si256((__m256i*)out, _mm512_cvtepi32_epi16(_mm512_srli_epi32(bits, 16)));
}

// 32 codes (signed bytes) widened: factor x code - minimum, the first 16 with f0/m0, the next 16 with f1/m1 (no fused
// multiply-add: as block_codes and widen_block compute them).
template <typename Out>
void widen32(__m256i codes, float f0, float m0, float f1, float m1, Out* out) {
  __m512 c0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(codes)));
  __m512 c1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(codes, 1)));
  store16(_mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(f0), c0), _mm512_set1_ps(m0)), out);
  store16(_mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(f1), c1), _mm512_set1_ps(m1)), out + 16);
}

// One block widened into out[0, 256): the same values as block_codes + widen_block, 32 codes at a time.
template <typename Out>
void widen_block512(const uint8_t* blk, int64_t type, Out* out) {
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  if (type == Q4_K) {
    float d = half_to_float(blk), dmin = half_to_float(blk + 2);
    uint8_t sc[8], mn[8];
    q4k_scales(blk + 4, sc, mn);
    for (int j = 0; j < 4; j++) {
      __m256i q = _mm256_loadu_si256((const __m256i*)(blk + 16 + 32 * j));
      float f0 = d * (float)sc[2 * j], m0 = dmin * (float)mn[2 * j];
      float f1 = d * (float)sc[2 * j + 1], m1 = dmin * (float)mn[2 * j + 1];
      widen32(_mm256_and_si256(q, low4), f0, m0, f0, m0, out + 64 * j);
      widen32(_mm256_and_si256(_mm256_srli_epi16(q, 4), low4), f1, m1, f1, m1, out + 64 * j + 32);
    }
    return;
  }
  const __m256i offset = _mm256_set1_epi8(32);
  const int8_t* sc = (const int8_t*)(blk + 192);
  float d = half_to_float(blk + 208);
  for (int h = 0; h < 2; h++) {
    __m256i codes[4];
    q6k_codes(blk, blk + 128, h, codes);
    for (int c = 0; c < 4; c++) {
      int s = 8 * h + 2 * c;  // the 16-weight sub-blocks of these 32
      widen32(_mm256_sub_epi8(codes[c], offset), d * (float)sc[s], 0.f, d * (float)sc[s + 1], 0.f,
              out + 128 * h + 32 * c);
    }
  }
}
#endif

// The weights as the file holds them, widened: [n, k] in dtype (float32 or bfloat16).
torch::Tensor dequant(torch::Tensor blocks, int64_t type, int64_t k, torch::ScalarType dtype) {
  check_blocks(blocks, type, k);
  TORCH_CHECK(dtype == torch::kFloat || dtype == torch::kBFloat16, "dequant widens to float32 or bfloat16");
  int64_t n = blocks.size(0), nb = k / QK, row_bytes = blocks.size(1), bytes = block_bytes(type);
  torch::Tensor out = torch::empty({n, k}, blocks.options().dtype(dtype));
  const uint8_t* w = blocks.data_ptr<uint8_t>();
  void* base = out.data_ptr();
#if defined(__AVX512F__)
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; r++) {
      for (int64_t b = 0; b < nb; b++) {
        const uint8_t* blk = w + r * row_bytes + b * bytes;
        if (dtype == torch::kFloat) {
          widen_block512(blk, type, static_cast<float*>(base) + r * k + b * QK);
        } else {
          widen_block512(blk, type, static_cast<uint16_t*>(base) + r * k + b * QK);
        }
      }
    }
  });
#else
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> row(k);
    alignas(32) int8_t codes[QK];
    float factor[16], minimum[16];
    for (int64_t r = begin; r < end; r++) {
      float* y = dtype == torch::kFloat ? static_cast<float*>(base) + r * k : row.data();
      for (int64_t b = 0; b < nb; b++) {
        block_codes(w + r * row_bytes + b * bytes, type, codes, factor, minimum);
        widen_block(codes, factor, minimum, y + b * QK);
      }
      if (dtype == torch::kBFloat16) to_bfloat16(row.data(), static_cast<uint16_t*>(base) + r * k, k);
    }
  });
#endif
  return out;
}

// float32 -> bfloat16 -> float32, rounding to nearest even as PyTorch does
float bf16_rounded(float v) { return static_cast<float>(c10::BFloat16(v)); }

// The activation rows as float32, through an RMSNorm when `norm` is given (transformers' Llama/Qwen2 RMSNorm:
// x / sqrt(mean(x^2) + eps), rounded to the activations' dtype, times the weight).
std::vector<float> activations(const torch::Tensor& x, const c10::optional<torch::Tensor>& norm, double eps) {
  int64_t m = x.size(0), k = x.size(1);
  bool bf16 = x.scalar_type() == torch::kBFloat16;
  std::vector<float> out(m * k);
  if (bf16) {
    const c10::BFloat16* from = x.data_ptr<c10::BFloat16>();
    for (int64_t i = 0; i < m * k; i++) out[i] = static_cast<float>(from[i]);
  } else {
    std::memcpy(out.data(), x.data_ptr<float>(), m * k * sizeof(float));
  }
  if (!norm.has_value()) return out;
  TORCH_CHECK(norm->scalar_type() == x.scalar_type() && norm->numel() == k && norm->is_contiguous(),
              "the norm weight must be [k] in the activations' dtype");
  std::vector<float> weight(k);
  for (int64_t j = 0; j < k; j++) {
    weight[j] = bf16 ? static_cast<float>(norm->data_ptr<c10::BFloat16>()[j]) : norm->data_ptr<float>()[j];
  }
  for (int64_t i = 0; i < m; i++) {
    float* row = out.data() + i * k;
    float lanes[16] = {};
    for (int64_t j = 0; j + 16 <= k; j += 16) {
      for (int l = 0; l < 16; l++) lanes[l] += row[j + l] * row[j + l];
    }
    float sum = 0.f;
    for (int l = 0; l < 16; l++) sum += lanes[l];
    for (int64_t j = k / 16 * 16; j < k; j++) sum += row[j] * row[j];
    float inv = 1.f / std::sqrt(sum / (float)k + (float)eps);
    for (int64_t j = 0; j < k; j++) {
      row[j] = bf16 ? bf16_rounded(weight[j] * bf16_rounded(row[j] * inv)) : weight[j] * (row[j] * inv);
    }
  }
  return out;
}

}  // namespace

// x: [m, k] (float32 or bfloat16) against several weights of the same input width (their blocks [n_i, k / 256 x
// block bytes] and GGML types, an optional float32 bias [n_i] each): [m, n_i] each, in x's dtype. The activations
// are quantized once for all of them, and one parallel loop runs over all their rows. Optionally, around the
// products: `norm` (an RMSNorm weight [k], with `eps`) applied to x first; `gated` (two weights): the one output
// silu(x W0) * (x W1); `residual` [m, n] (one weight): added to the output.
std::vector<torch::Tensor> mm_group(torch::Tensor x, std::vector<torch::Tensor> blocks, std::vector<int64_t> types,
                                    std::vector<c10::optional<torch::Tensor>> biases,
                                    c10::optional<torch::Tensor> norm, double eps, bool gated,
                                    c10::optional<torch::Tensor> residual) {
  TORCH_CHECK(x.dim() == 2 && blocks.size() == types.size() && blocks.size() == biases.size(),
              "mm_group takes x [rows, k] and as many types and biases as blocks");
  TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16,
              "mm_group takes float32 or bfloat16 activations");
  int64_t m = x.size(0), k = x.size(1), nb = k / QK;
  bool bf16 = x.scalar_type() == torch::kBFloat16;
  x = x.contiguous();
  std::vector<float> wide = activations(x, norm, eps);
  std::vector<QuantRow> rows(m);
  for (int64_t i = 0; i < m; i++) quantize_row(wide.data() + i * k, k, rows[i]);
  std::vector<torch::Tensor> outs;
  std::vector<int64_t> first{0};  // the group's row where each weight starts
  for (size_t g = 0; g < blocks.size(); g++) {
    check_blocks(blocks[g], types[g], k);
    TORCH_CHECK(!biases[g].has_value() || (biases[g]->scalar_type() == torch::kFloat && biases[g]->is_contiguous()),
                "biases must be contiguous float32");
    outs.push_back(torch::empty({m, blocks[g].size(0)}, x.options()));
    first.push_back(first.back() + blocks[g].size(0));
  }
  TORCH_CHECK(!gated || (blocks.size() == 2 && blocks[0].size(0) == blocks[1].size(0)),
              "gated takes two weights of one output width");
  const float* res = nullptr;
  torch::Tensor res_float;
  if (residual.has_value()) {
    TORCH_CHECK(blocks.size() == 1 && residual->numel() == m * blocks[0].size(0) &&
                residual->scalar_type() == x.scalar_type(), "residual takes one weight's output shape and dtype");
    res_float = residual->to(torch::kFloat).contiguous();
    res = res_float.data_ptr<float>();
  }
  // weight g's rows [lo, hi) against every activation row, bias added: part[i * (hi - lo) + r]
  auto products = [&](size_t g, int64_t lo, int64_t hi, std::vector<float>& part) {
    int64_t count = hi - lo;
    part.resize(m * count);
    dot_rows(blocks[g].data_ptr<uint8_t>() + lo * blocks[g].size(1), blocks[g].size(1), count, types[g], rows, nb,
             part.data());
    if (biases[g].has_value()) {
      const float* bias = biases[g]->data_ptr<float>() + lo;
      for (int64_t j = 0; j < m * count; j++) part[j] += bias[j % count];
    }
  };
  auto store = [&](torch::Tensor& out, const float* values, int64_t i, int64_t lo, int64_t count) {
    int64_t n = out.size(1);
    if (bf16) {
      to_bfloat16(values, static_cast<uint16_t*>(out.data_ptr()) + i * n + lo, count);
    } else {
      std::memcpy(out.data_ptr<float>() + i * n + lo, values, count * sizeof(float));
    }
  };
  if (gated) {  // each thread's rows of both weights, so that it combines them too
    at::parallel_for(0, blocks[0].size(0), 16, [&](int64_t lo, int64_t hi) {
      std::vector<float> gate, up;
      products(0, lo, hi, gate);
      products(1, lo, hi, up);
      for (size_t j = 0; j < gate.size(); j++) {  // silu(gate) * up, each op rounded as PyTorch's on the dtype
        float v = bf16 ? bf16_rounded(gate[j]) : gate[j];
        float act = v / (1.f + std::exp(-v));
        gate[j] = bf16 ? bf16_rounded(act) * bf16_rounded(up[j]) : act * up[j];
      }
      for (int64_t i = 0; i < m; i++) store(outs[0], gate.data() + i * (hi - lo), i, lo, hi - lo);
    });
    outs.pop_back();
    return outs;
  }
  at::parallel_for(0, first.back(), 16, [&](int64_t begin, int64_t end) {
    std::vector<float> part;
    for (size_t g = 0; g < blocks.size(); g++) {  // this thread's rows of each weight
      int64_t lo = std::max(begin, first[g]) - first[g], hi = std::min(end, first[g + 1]) - first[g];
      if (lo >= hi) continue;
      int64_t count = hi - lo;
      products(g, lo, hi, part);
      for (int64_t i = 0; i < m; i++) {
        float* values = part.data() + i * count;
        if (res != nullptr) {  // the product in x's dtype, then the sum
          const float* add = res + i * outs[g].size(1) + lo;
          for (int64_t r = 0; r < count; r++) values[r] = (bf16 ? bf16_rounded(values[r]) : values[r]) + add[r];
        }
        store(outs[g], values, i, lo, count);
      }
    }
  });
  return outs;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("mm_group", &mm_group, "x @ blocks.T (+ bias) for several weights of a GGUF's Q4_K / Q6_K blocks",
        pybind11::arg("x"), pybind11::arg("blocks"), pybind11::arg("types"), pybind11::arg("biases"),
        pybind11::arg("norm") = pybind11::none(), pybind11::arg("eps") = 0.0, pybind11::arg("gated") = false,
        pybind11::arg("residual") = pybind11::none());
  m.def("dequant", &dequant, "a GGUF's Q4_K / Q6_K blocks widened to float32 or bfloat16");
  register_decode_ops(m);
}
