// Philox4x32-10 and the samplers built on it (random.h).  Compiled with -ffp-contract=off (CMakeLists.txt): an FMA
// rounds once where a multiply and an add round twice, so contraction would make the bits depend on the ISA level.
#include "fastnorm/random.h"

#include <algorithm>
#include <cmath>
#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
// Vector types pass between the inlined lane functions below only; their ABI never crosses a call.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include "fastnorm/blocked.h"
#include "fastnorm/parallel.h"
#include "fastnorm/simd_math.h"

namespace fastnorm {
namespace {

using math::bit_cast;
using math::horner;
using u32 = std::uint32_t;
using u64 = std::uint64_t;

struct Block {
  u32 w0, w1, w2, w3;
};

constexpr u32 kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

// The reference form: one block, ten rounds of two 32x32 -> 64-bit multiplies.
FASTNORM_INLINE Block philox(u32 c0, u32 c1, u32 c2, u32 c3, u32 k0, u32 k1) {
  for (int round = 0; round < 10; ++round) {
    const u64 p0 = static_cast<u64>(kM0) * c0;
    const u64 p1 = static_cast<u64>(kM1) * c2;
    const u32 n0 = static_cast<u32>(p1 >> 32) ^ c1 ^ k0;
    const u32 n2 = static_cast<u32>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<u32>(p1);
    c3 = static_cast<u32>(p0);
    c0 = n0;
    c2 = n2;
    k0 += kW0;
    k1 += kW1;
  }
  return {c0, c1, c2, c3};
}

// The words of the B blocks with counters first, first + 1, ...: word k of block j at words[k * B + j].
void philox_chunk_scalar(u64 first, u32 k0, u32 k1, idx B, u32* words) {
  for (idx j = 0; j < B; ++j) {
    const u64 c = first + static_cast<u64>(j);
    const Block w = philox(static_cast<u32>(c), static_cast<u32>(c >> 32), 0, 0, k0, k1);
    words[j] = w.w0;
    words[B + j] = w.w1;
    words[2 * B + j] = w.w2;
    words[3 * B + j] = w.w3;
  }
}

#if FASTNORM_MULTI_ISA
// The same with vector intrinsics (compilers vectorise the reference form with widened 64-bit multiplies, three
// to four times slower).  Each 64-bit lane carries one block, its 32-bit word in the low half: the unsigned
// 32x32 -> 64-bit multiply (pmuludq) reads only low halves and gives the whole product in the lane, whose high
// word is one dword swap away (pshufd: another port than the multiply, where a shift would compete with it) and
// whose low half is the low word as it stands.  What accumulates in the high halves
// is never read.  One template, three lane widths: SSE2 (2 blocks), AVX2 (4), AVX-512 (8); the lane functions
// carry their ISA's target attribute, so the template is only inlined (flatten) into a function of that target.
template <class L>
inline void philox_chunk_lanes(u64 first, u32 k0, u32 k1, idx B, u32* words) {
  using V = typename L::V;
  V key0[10], key1[10];
  for (int r = 0; r < 10; ++r) {
    key0[r] = L::set1(k0 + static_cast<u32>(r) * kW0);
    key1[r] = L::set1(k1 + static_cast<u32>(r) * kW1);
  }
  const V m0 = L::set1(kM0), m1 = L::set1(kM1), zero = L::set1(0);
  // L::chains vectors of blocks at a time: a round is a chain of dependent operations (multiply, swap, xor), and
  // independent chains keep the vector ports busy (AVX-512: four, 8% faster than two; SSE2 and AVX2 have half the
  // registers).
  constexpr idx U = L::chains;
  for (idx j = 0; j < B; j += U * L::lanes) {
    V c0[U], c1[U], c2[U], c3[U];
    for (idx u = 0; u < U; ++u) {
      c0[u] = L::counters(first + static_cast<u64>(j + u * L::lanes));
      c1[u] = L::high(c0[u]);
      c2[u] = c3[u] = zero;
    }
    for (int r = 0; r < 10; ++r) {
      for (idx u = 0; u < U; ++u) {
        const V p0 = L::mul(c0[u], m0), p1 = L::mul(c2[u], m1);
        c0[u] = L::xor3(L::high(p1), c1[u], key0[r]);
        c2[u] = L::xor3(L::high(p0), c3[u], key1[r]);
        c1[u] = p1;
        c3[u] = p0;
      }
    }
    for (idx u = 0; u < U; u += 2) {
      const idx at = j + u * L::lanes;
      L::store_low2(words + at, c0[u], c0[u + 1]);
      L::store_low2(words + B + at, c1[u], c1[u + 1]);
      L::store_low2(words + 2 * B + at, c2[u], c2[u + 1]);
      L::store_low2(words + 3 * B + at, c3[u], c3[u + 1]);
    }
  }
}

struct Sse2Lanes {
  using V = __m128i;
  static constexpr idx lanes = 2, chains = 2;
  static FASTNORM_INLINE V set1(u32 x) { return _mm_set1_epi32(static_cast<int>(x)); }
  static FASTNORM_INLINE V counters(u64 c) {
    return _mm_set_epi64x(static_cast<long long>(c + 1), static_cast<long long>(c));
  }
  static FASTNORM_INLINE V high(V a) { return _mm_shuffle_epi32(a, _MM_SHUFFLE(2, 3, 0, 1)); }
  static FASTNORM_INLINE V mul(V a, V b) { return _mm_mul_epu32(a, b); }
  static FASTNORM_INLINE V xor3(V a, V b, V c) { return _mm_xor_si128(_mm_xor_si128(a, b), c); }
  // The low words of a's lanes, then of b's, to p.
  static FASTNORM_INLINE void store_low2(u32* p, V a, V b) {
    const __m128 lows = _mm_shuffle_ps(_mm_castsi128_ps(a), _mm_castsi128_ps(b), _MM_SHUFFLE(2, 0, 2, 0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_castps_si128(lows));
  }
};

struct Avx2Lanes {
  using V = __m256i;
  static constexpr idx lanes = 4, chains = 2;
  static inline FASTNORM_TARGET_V3 V set1(u32 x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  static inline FASTNORM_TARGET_V3 V counters(u64 c) {
    return _mm256_add_epi64(_mm256_set1_epi64x(static_cast<long long>(c)), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static inline FASTNORM_TARGET_V3 V high(V a) { return _mm256_shuffle_epi32(a, _MM_SHUFFLE(2, 3, 0, 1)); }
  static inline FASTNORM_TARGET_V3 V mul(V a, V b) { return _mm256_mul_epu32(a, b); }
  static inline FASTNORM_TARGET_V3 V xor3(V a, V b, V c) {
    return _mm256_xor_si256(_mm256_xor_si256(a, b), c);
  }
  static inline FASTNORM_TARGET_V3 void store_low2(u32* p, V a, V b) {
    // Per 128-bit half the low words of a, then of b; then the middle two 64-bit quarters swapped.
    const __m256 lows = _mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), _MM_SHUFFLE(2, 0, 2, 0));
    const V ordered = _mm256_permute4x64_epi64(_mm256_castps_si256(lows), _MM_SHUFFLE(3, 1, 2, 0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), ordered);
  }
};

struct Avx512Lanes {
  using V = __m512i;
  static constexpr idx lanes = 8, chains = 4;
  static inline FASTNORM_TARGET_V4 V set1(u32 x) { return _mm512_set1_epi32(static_cast<int>(x)); }
  static inline FASTNORM_TARGET_V4 V counters(u64 c) {
    return _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(c)), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline FASTNORM_TARGET_V4 V high(V a) { return _mm512_shuffle_epi32(a, _MM_PERM_CDAB); }
  static inline FASTNORM_TARGET_V4 V mul(V a, V b) { return _mm512_mul_epu32(a, b); }
  static inline FASTNORM_TARGET_V4 V xor3(V a, V b, V c) { return _mm512_ternarylogic_epi64(a, b, c, 0x96); }
  static inline FASTNORM_TARGET_V4 void store_low2(u32* p, V a, V b) {  // one permute for two vectors
    const V even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    _mm512_storeu_si512(p, _mm512_permutex2var_epi32(a, even, b));
  }
};

#define FASTNORM_FLATTEN __attribute__((flatten))
FASTNORM_FLATTEN void philox_chunk_sse2(u64 first, u32 k0, u32 k1, idx B, u32* words) {
  philox_chunk_lanes<Sse2Lanes>(first, k0, k1, B, words);
}
FASTNORM_TARGET_V3 FASTNORM_FLATTEN void philox_chunk_avx2(u64 first, u32 k0, u32 k1, idx B, u32* words) {
  philox_chunk_lanes<Avx2Lanes>(first, k0, k1, B, words);
}
FASTNORM_TARGET_V4 FASTNORM_FLATTEN void philox_chunk_avx512(u64 first, u32 k0, u32 k1, idx B, u32* words) {
  philox_chunk_lanes<Avx512Lanes>(first, k0, k1, B, words);
}
#endif

// B a multiple of 32 (the widest lane function's blocks per step).
void philox_chunk(u64 first, u32 k0, u32 k1, idx B, u32* words) {
#if FASTNORM_MULTI_ISA
  switch (active_isa()) {
    case Isa::v4: return philox_chunk_avx512(first, k0, k1, B, words);
    case Isa::v3: return philox_chunk_avx2(first, k0, k1, B, words);
    case Isa::baseline: return philox_chunk_sse2(first, k0, k1, B, words);
  }
#endif
  philox_chunk_scalar(first, k0, k1, B, words);
}

// Uniforms in [0, 1) from 24 random bits (float: a field, the high bits of w), or from 53 (double, two words; in
// (0, 1] with `open0`).
FASTNORM_INLINE float uniform24(u32 w) { return static_cast<float>(static_cast<std::int32_t>(w >> 8)) * 0x1p-24f; }
// n <= 2^53 to double is exact either way: one conversion at v4 (AVX-512DQ has it), else two exact halves
// (math::exact_float), where a 64-bit conversion would leave the loop scalar.
template <Isa I>
FASTNORM_INLINE double uniform53(u32 hi, u32 lo, bool open0) {
  const u64 n = (((static_cast<u64>(hi) << 32) | lo) >> 11) + (open0 ? 1u : 0u);
  if constexpr (I == Isa::v4) return static_cast<double>(static_cast<std::int64_t>(n)) * 0x1p-53;
  return math::exact_float(static_cast<std::int64_t>(n >> 26)) * 0x1p-27 +
         math::exact_float(static_cast<std::int64_t>(n & 0x3ffffff)) * 0x1p-53;
}

// a * b + c rounded once, with the same bits at every level: the FMA instruction at v3 and v4 (and wherever the
// compiler targets one); at x86-64 baseline, which has none, float's product exactly in double (48 bits) and the
// sum rounded to odd (Boldo & Melquiond 2008), so that its rounding to float is the one correct rounding (53 >= 24
// + 2 bits).  Rounding to odd: the sum rounded to nearest, its error exactly (Knuth's TwoSum); when inexact and
// the sum's last bit is even, the odd neighbour on the error's side.  Integer adds, logic and shifts only (SSE2 has
// no 64-bit compare, and a loop with one stays scalar): it vectorises.
template <Isa I>
FASTNORM_INLINE float fma_(float a, float b, float c) {
#if FASTNORM_MULTI_ISA
  if constexpr (I == Isa::baseline) {
    const double p = static_cast<double>(a) * static_cast<double>(b), cd = static_cast<double>(c), s = p + cd;
    const double z = s - p, err = (p - (s - z)) + (cd - z);
    const u64 bits = bit_cast<u64>(s), e = bit_cast<u64>(err) & ~(u64(1) << 63);
    const u64 inexact = (e | (u64(0) - e)) >> 63;                  // 1 when e != 0
    const u64 toward_zero = (bit_cast<u64>(err) ^ bits) >> 63;     // 1 when err and s differ in sign
    // bits + 1 or bits - 1 when even and inexact (the odd one of the two neighbours), else bits
    return static_cast<float>(bit_cast<double>((bits - (toward_zero & inexact)) | inexact));
  }
#endif
  return __builtin_fmaf(a, b, c);
}
// Horner's rule (math::horner) with one rounding per step.
template <Isa I>
FASTNORM_INLINE float horner_fma(float, float acc) {
  return acc;
}
template <Isa I, class... C>
FASTNORM_INLINE float horner_fma(float x, float acc, float next, C... rest) {
  return horner_fma<I>(x, fma_<I>(acc, x, next), static_cast<float>(rest)...);
}

// Box-Muller (Box & Muller 1958): z0, z1 = r (cos, sin)(theta), with r = sqrt(-2 log u) for a uniform u in (0, 1]
// and theta uniform on the circle.  theta = 2 pi t with t in [-1/8, 1/8) from one word's high bits, where a
// polynomial gives sin and cos directly, then one of four quarter turns from two low bits of the same word (bit 1
// negates the cosine, bit 0 swaps the pair): (c, s), (-c, s), (s, c), (s, -c) cover the right, left, top and
// bottom quarters.  float: u from field 0 (24 bits), t from the high 22 bits of field 1 and the quarter from its
// low 2 (fields 2, 3 for the column's second pair); double: u from 53 bits of words 0-1, t from 52 bits of words
// 2-3 and the quarter from two of the 12 left.
template <class T>
struct SinCos {
  T s, c;
};

// float: minimax on |w| <= 1/8 (Remez, relative error 3e-9 and 6e-10 before rounding; 1.7 and 1.3 ulp in float).
template <Isa I>
FASTNORM_INLINE float sin2pi_poly(float w, float w2) {
  return w * horner_fma<I>(w2, -75.39356231689453f, 81.59235382080078f, -41.3416633605957f, 6.2831854820251465f);
}
template <Isa I>
FASTNORM_INLINE float cos2pi_poly(float w2) {
  return horner_fma<I>(w2, 59.42170715332031f, -85.44876098632812f, 64.93936920166016f, -19.739208221435547f,
                       1.0f);
}
// double: Taylor series to degree 17 and 18 (truncation below 1e-19).
FASTNORM_INLINE double sin2pi_poly(double w, double w2) {
  return w * horner(w2, 0.104229162208139841173, -0.718122301778500512232, 3.81995258484828212773,
                    -15.0946425768229903918, 42.058693944897653145, -76.7058597530613858416,
                    81.6052492760750542034, -41.341702240399760234, 6.28318530717958647693);
}
FASTNORM_INLINE double cos2pi_poly(double w2) {
  return horner(w2, -0.0363828411425456707718, 0.28200596845579121507, -1.71439071108867206542,
                7.90353637131846880421, -26.4262567833743974529, 60.2446413718766603627, -85.456817206693727736,
                64.939394022668291491, -19.7392088021787172377, 1.0);
}

// The radius for double: u in (0, 1] from 53 bits, math::log_ (fdlibm's, about 1 ulp).
template <Isa I>
FASTNORM_INLINE double bm_radius53(u32 hi, u32 lo) {
  return std::sqrt(-2.0 * math::log_(uniform53<I>(hi, lo, true)));
}

// The radius for float, u = n 2^-24 with n = (w >> 8) + 1 in [1, 2^24], within 1.15 ulp of the exact
// sqrt(-2 log u) over all 2^24 values (checked against float64 in NumPy): u = 2^k (1 + f), 1 + f in
// [sqrt(1/2), sqrt(2)), read off the bits of float(n) with the 2^-24 folded into the exponent offset;
// log(1 + f) = f + f^2 (f P(f) - 1/2), P a degree-6 minimax (Remez; relative error 3e-8 in log(1 + f)) evaluated
// by Estrin's scheme (a shorter dependency chain than Horner's), with fused multiply-adds; -2 k log 2 with one
// constant (relative error 3e-9).  No division: fdlibm's s = f / (2 + f) shares the divider with the square root.
template <Isa I>
FASTNORM_INLINE float bm_radius24(u32 w) {
  constexpr std::int32_t sqrt_half = 0x3f3504f3;  // the bits of float(sqrt(1/2))
  const float x = static_cast<float>(static_cast<std::int32_t>((w >> 8) + 1u));
  const std::int32_t offset = bit_cast<std::int32_t>(x) - (sqrt_half + (24 << 23));
  const float k = static_cast<float>(offset >> 23);
  const float f = bit_cast<float>((offset & 0x7fffff) + sqrt_half) - 1.0f;
  const float f2 = f * f, f4 = f2 * f2;
  const float p01 = fma_<I>(f, -0.2500133812427521f, 0.333339124917984f);
  const float p23 = fma_<I>(f, -0.16577544808387756f, 0.19963045418262482f);
  const float p45 = fma_<I>(f, -0.1426788866519928f, 0.14914940297603607f);
  const float p = fma_<I>(f4, fma_<I>(f2, 0.08700424432754517f, p45), fma_<I>(f2, p23, p01));
  const float log_m = fma_<I>(f2, fma_<I>(f, p, -0.5f), f);
  return std::sqrt(fma_<I>(k, -1.3862943611198906f, log_m * -2.0f));
}

// (cos, sin)(theta) for Box-Muller from sin and cos of 2 pi t and two bits of the angle word below t's: the
// higher (`negate`) negates the cosine, the lower (`swap`) swaps the pair (see SinCos).
template <class T>
FASTNORM_INLINE SinCos<T> quarter_turn(T s, T c, u32 w, u32 negate, u32 swap) {
  c = (w & negate) != 0 ? -c : c;
  const bool swapped = (w & swap) != 0;
  return {swapped ? c : s, swapped ? s : c};
}
template <Isa I>
FASTNORM_INLINE SinCos<float> unit_vector(u32 w) {  // a field: its 24 bits are w's high ones
  const float t = static_cast<float>(static_cast<std::int32_t>(w) >> 10) * 0x1p-24f;
  const float t2 = t * t;
  return quarter_turn(sin2pi_poly<I>(t, t2), cos2pi_poly<I>(t2), w, 1u << 9, 1u << 8);
}
FASTNORM_INLINE SinCos<double> unit_vector(u32 hi, u32 lo) {
  const u64 bits = (static_cast<u64>(hi) << 32) | lo;
  const double t = math::exact_float(static_cast<std::int64_t>(bits >> 12) - (std::int64_t(1) << 51)) * 0x1p-54;
  const double t2 = t * t;
  return quarter_turn(sin2pi_poly(t, t2), cos2pi_poly(t2), lo, 2u, 1u);
}

// Inverse of the standard normal CDF for p in (0, 1): Wichura, AS241 (PPND16), relative error about 1e-16.
template <class T>
FASTNORM_INLINE T ndtri(T p) {
  const T q = p - T(0.5);
  const T rc = T(0.180625) - q * q;
  const T central =
      q * horner(rc, T(2.5090809287301226727e+3), T(3.3430575583588128105e+4), T(6.7265770927008700853e+4),
                 T(4.5921953931549871457e+4), T(1.3731693765509461125e+4), T(1.9715909503065514427e+3),
                 T(1.3314166789178437745e+2), T(3.3871328727963666080e0)) /
      horner(rc, T(5.2264952788528545610e+3), T(2.8729085735721942674e+4), T(3.9307895800092710610e+4),
             T(2.1213794301586595867e+4), T(5.3941960214247511077e+3), T(6.8718700749205790830e+2),
             T(4.2313330701600911252e+1), T(1.0));
  const T pt = q < T(0) ? p : T(1) - p;  // 1 - p is exact for p >= 1/2
  const T r = std::sqrt(-math::log_(pt));
  const T rn = r - T(1.6);
  const T near = horner(rn, T(7.74545014278341407640e-4), T(2.27238449892691845833e-2),
                        T(2.41780725177450611770e-1), T(1.27045825245236838258e0), T(3.64784832476320460504e0),
                        T(5.76949722146069140550e0), T(4.63033784615654529590e0), T(1.42343711074968357734e0)) /
                 horner(rn, T(1.05075007164441684324e-9), T(5.47593808499534494600e-4),
                        T(1.51986665636164571966e-2), T(1.48103976427480074590e-1), T(6.89767334985100004550e-1),
                        T(1.67638483018380384940e0), T(2.05319162663775882187e0), T(1.0));
  const T rf = r - T(5);
  const T far = horner(rf, T(2.01033439929228813265e-7), T(2.71155556874348757815e-5),
                       T(1.24266094738807843860e-3), T(2.65321895265761230930e-2), T(2.96560571828504891230e-1),
                       T(1.78482653991729133580e0), T(5.46378491116411436990e0), T(6.65790464350110377720e0)) /
                horner(rf, T(2.04426310338993978564e-15), T(1.42151175831644588870e-7),
                       T(1.84631831751005468180e-5), T(7.86869131145613259100e-4), T(1.48753612908506148525e-2),
                       T(1.36929880922735805310e-1), T(5.99832206555887937690e-1), T(1.0));
  const T tail = r <= T(5) ? near : far;
  const T signed_tail = q < T(0) ? -tail : tail;
  return math::abs_(q) <= T(0.425) ? central : signed_tail;
}

// Per-call constants, in the type of the computation; flat, T members only (simd_math.h: a nested struct here
// made the sampling loops scalar, 5x slower).
template <class T>
struct ChunkConsts {
  T loc, scale;   // normal, truncated normal
  T low, span;    // uniform: low + span u
  T pa, width;    // truncated normal: the uniform on [pa, pa + width]
  T sign;         // -1 when sampling on [-b, -a]
  T lo, hi;       // clip bounds of z, in the sampled orientation
};

double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

template <class T>
ChunkConsts<T> chunk_consts(const SampleParams& p) {
  const bool flip = p.a > 0;
  const double a = flip ? -p.b : p.a, b = flip ? -p.a : p.b;
  const double pa = normal_cdf(a), pb = normal_cdf(b);
  return {static_cast<T>(p.loc), static_cast<T>(p.scale), static_cast<T>(p.low), static_cast<T>(p.high - p.low),
          static_cast<T>(pa), static_cast<T>(pb - pa), flip ? T(-1) : T(1), static_cast<T>(a), static_cast<T>(b)};
}

template <class T>
FASTNORM_INLINE T truncated(T u, const ChunkConsts<T>& tc) {
  T p = tc.pa + tc.width * u;
  p = p < std::numeric_limits<T>::min() ? std::numeric_limits<T>::min() : p;
  T z = ndtri(p);
  z = z < tc.lo ? tc.lo : (z > tc.hi ? tc.hi : z);
  return tc.loc + tc.scale * (tc.sign * z);
}

// Up to four values of one column (values_per_column<T>() of them are used): flat, T members only (simd_math.h).
// Blocks and Values travel by value: a reference to one kept it in memory and left the loop scalar (5x slower).
template <class T>
struct Values {
  T v0, v1, v2, v3;
};

// A column's uniforms in [0, 1): four of 24 bits (float), or two of 53 bits (double, in v0 and v1).
template <Isa I, class T>
FASTNORM_INLINE Values<T> column_uniforms(u32 w0, u32 w1, u32 w2, u32 w3) {
  if constexpr (values_per_column<T>() == 4) {
    return {uniform24(w0), uniform24(w1), uniform24(w2), uniform24(w3)};
  } else {
    return {uniform53<I>(w0, w1, false), uniform53<I>(w2, w3, false), T(0), T(0)};
  }
}

// Each distribution maps a column's four words (float: fields) to its values.
template <Isa I, class T>
struct UniformDist {
  static FASTNORM_INLINE Values<T> values(u32 w0, u32 w1, u32 w2, u32 w3, const ChunkConsts<T>& k) {
    const Values<T> u = column_uniforms<I, T>(w0, w1, w2, w3);
    return {k.low + k.span * u.v0, k.low + k.span * u.v1, k.low + k.span * u.v2, k.low + k.span * u.v3};
  }
};

// With Affine false (loc 0, scale 1, the common call), the values are z itself: three operations fewer per pair,
// the same values but for the sign of an exact zero (-0 stays -0, where 0 + 1 * z would give +0).
template <Isa I, class T, bool Affine>
struct NormalDist {
  static FASTNORM_INLINE T scaled(T r, const ChunkConsts<T>& k) { return Affine ? k.scale * r : r; }
  static FASTNORM_INLINE T shifted(T z, const ChunkConsts<T>& k) { return Affine ? k.loc + z : z; }
  static FASTNORM_INLINE Values<T> values(u32 w0, u32 w1, u32 w2, u32 w3, const ChunkConsts<T>& k) {
    if constexpr (values_per_column<T>() == 4) {
      const T ra = scaled(bm_radius24<I>(w0), k), rb = scaled(bm_radius24<I>(w2), k);
      const SinCos<T> a = unit_vector<I>(w1), b = unit_vector<I>(w3);
      return {shifted(ra * a.c, k), shifted(ra * a.s, k), shifted(rb * b.c, k), shifted(rb * b.s, k)};
    } else {
      const T r = scaled(bm_radius53<I>(w0, w1), k);
      const SinCos<T> a = unit_vector(w2, w3);
      return {shifted(r * a.c, k), shifted(r * a.s, k), T(0), T(0)};
    }
  }
};

template <Isa I, class T>
struct TruncatedDist {
  static FASTNORM_INLINE Values<T> values(u32 w0, u32 w1, u32 w2, u32 w3, const ChunkConsts<T>& k) {
    const Values<T> u = column_uniforms<I, T>(w0, w1, w2, w3);
    if constexpr (values_per_column<T>() == 4) {
      return {truncated(u.v0, k), truncated(u.v1, k), truncated(u.v2, k), truncated(u.v3, k)};
    } else {
      return {truncated(u.v0, k), truncated(u.v1, k), T(0), T(0)};
    }
  }
};

// float's fourth field: the low bytes of a column's three words (below their fields), as the high 24 bits.
FASTNORM_INLINE u32 low_bytes(u32 a, u32 b, u32 c) { return (a << 24) | ((b & 0xffu) << 16) | ((c & 0xffu) << 8); }

// One chunk from its Philox words (philox_chunk) read as rows of C words: value k of column j into out[k * C + j].
// float draws 24 bits per value, so three words make four values (random.h): a quarter fewer Philox blocks.
template <class Dist, class T>
FASTNORM_INLINE void fill_chunk(const u32* words, T* out, const ChunkConsts<T>& k) {
  constexpr idx C = kChunkColumns;
#pragma omp simd
  for (idx j = 0; j < C; ++j) {
    const u32 a = words[j], b = words[C + j], c = words[2 * C + j];
    const u32 d = values_per_column<T>() == 4 ? low_bytes(a, b, c) : words[3 * C + j];
    const Values<T> v = Dist::values(a, b, c, d, k);
    out[j] = v.v0;
    out[C + j] = v.v1;
    if constexpr (values_per_column<T>() == 4) {
      out[2 * C + j] = v.v2;
      out[3 * C + j] = v.v3;
    }
  }
}

template <class T>
struct ChunkBody {
  static constexpr bool takes_isa = true;
  template <Isa I>
  static FASTNORM_INLINE void run(Distribution d, const u32* words, T* out, const ChunkConsts<T>& k) {
    switch (d) {
      case Distribution::uniform: return fill_chunk<UniformDist<I, T>>(words, out, k);
      case Distribution::normal:
        if (k.loc == T(0) && k.scale == T(1)) return fill_chunk<NormalDist<I, T, false>>(words, out, k);
        return fill_chunk<NormalDist<I, T, true>>(words, out, k);
      case Distribution::truncated_normal: return fill_chunk<TruncatedDist<I, T>>(words, out, k);
    }
  }
};

}  // namespace

void philox4x32_10(const std::uint32_t ctr[4], const std::uint32_t key[2], std::uint32_t out[4]) {
  const Block b = philox(ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1]);
  out[0] = b.w0;
  out[1] = b.w1;
  out[2] = b.w2;
  out[3] = b.w3;
}

template <class T>
void sample(Distribution d, std::uint64_t key, std::uint64_t counter, T* out, idx n, const SampleParams& p,
            int num_threads, bool stream) {
  constexpr idx chunk = kChunkColumns * values_per_column<T>(), blocks = chunk_blocks<T>();
  const u32 k0 = static_cast<u32>(key), k1 = static_cast<u32>(key >> 32);
  const ChunkConsts<T> k = chunk_consts<T>(p);
  const idx chunks = chunks_for<T>(n);
  // A chunk is 4 KiB of output: about 16 per elementwise grain.  Each is computed in an L1 buffer and copied out
  // in order: its four interleaved rows (value k of every block) written straight to memory ran up to 3x slower
  // once the output left the caches (uniform at 16M values: 1.95 -> 0.67 ns per value, 1 thread).
  parallel_for(chunks, kElementwiseGrain / chunk, num_threads, [&](idx c0, idx c1) {
    alignas(64) T buf[chunk];
    alignas(64) u32 words[4 * kChunkColumns];
    for (idx c = c0; c < c1; ++c) {
      const idx begin = c * chunk, len = std::min(chunk, n - begin);
      philox_chunk(counter + static_cast<u64>(c) * blocks, k0, k1, blocks, words);
      isa_call<ChunkBody<T>>(d, static_cast<const u32*>(words), static_cast<T*>(buf), k);
#if FASTNORM_HAVE_STREAM
      if (stream) {  // any alignment: whole lines streamed, partial ones at the ends stored plainly
        stream_store(static_cast<const T*>(buf), out + begin, len);
        continue;
      }
#endif
      std::copy(buf, buf + len, out + begin);
    }
#if FASTNORM_HAVE_STREAM
    if (stream) stream_fence();
#endif
  });
}

namespace {

// y = x k + c, (k, c) = keep ? (scale, shift) : (0, drop_shift), over one chunk's values (n <= kDropoutChunk): value
// i keeps iff its 16 random bits (the low half of word i, or the high half of word i - kDropoutChunk / 2) are
// >= threshold.  A multiply, not a select, so that NaN stays NaN as in x * mask.
template <class T>
struct DropoutChunk {
  static FASTNORM_INLINE void run(const u32* words, const T* x, T* y, idx n, u32 threshold, T scale, T shift,
                                  T drop_shift) {
    constexpr idx kHalf = kDropoutChunk / 2;
    const idx low = std::min(n, kHalf);
#pragma omp simd
    for (idx i = 0; i < low; ++i) {
      const bool keep = (words[i] & 0xffffu) >= threshold;
      y[i] = x[i] * (keep ? scale : T(0)) + (keep ? shift : drop_shift);
    }
#pragma omp simd
    for (idx i = kHalf; i < n; ++i) {
      const bool keep = (words[i - kHalf] >> 16) >= threshold;
      y[i] = x[i] * (keep ? scale : T(0)) + (keep ? shift : drop_shift);
    }
  }
};

}  // namespace

template <class T>
void dropout(std::uint64_t key, std::uint64_t counter, const T* x, T* y, idx n, std::uint32_t threshold, T scale,
             T shift, T drop_shift, int num_threads, bool stream) {
  const u32 k0 = static_cast<u32>(key), k1 = static_cast<u32>(key >> 32);
  const idx chunks = dropout_chunks(n);
  parallel_for(chunks, std::max<idx>(1, kElementwiseGrain / kDropoutChunk), num_threads, [&](idx c0, idx c1) {
    alignas(64) u32 words[4 * kDropoutBlocks];
    alignas(64) T buf[kDropoutChunk];
    for (idx c = c0; c < c1; ++c) {
      const idx begin = c * kDropoutChunk, len = std::min(kDropoutChunk, n - begin);
      // the next chunk's x on its way while Philox computes: read in bursts between the blocks' arithmetic, x
      // missed the hardware prefetcher (16M values, 1 thread: 7.0 -> 3.3 ms; relu 2.5)
      if (c + 1 < c1) {
        const char* next = reinterpret_cast<const char*>(x + begin + kDropoutChunk);
        const idx bytes = std::min(kDropoutChunk, n - begin - kDropoutChunk) * static_cast<idx>(sizeof(T));
        for (idx b = 0; b < bytes; b += 64) __builtin_prefetch(next + b);
      }
      philox_chunk(counter + static_cast<u64>(c) * kDropoutBlocks, k0, k1, kDropoutBlocks, words);
      // streamed: computed into an L1 buffer, then written past the caches (as sample)
      T* out = stream ? buf : y + begin;
      isa_call<DropoutChunk<T>>(static_cast<const u32*>(words), x + begin, out, len, threshold, scale, shift,
                                drop_shift);
#if FASTNORM_HAVE_STREAM
      if (stream) stream_store(static_cast<const T*>(buf), y + begin, len);
#endif
    }
#if FASTNORM_HAVE_STREAM
    if (stream) stream_fence();
#endif
  });
}

template void dropout<float>(std::uint64_t, std::uint64_t, const float*, float*, idx, std::uint32_t, float, float,
                             float, int, bool);
template void dropout<double>(std::uint64_t, std::uint64_t, const double*, double*, idx, std::uint32_t, double,
                              double, double, int, bool);

template void sample<float>(Distribution, std::uint64_t, std::uint64_t, float*, idx, const SampleParams&, int,
                           bool);
template void sample<double>(Distribution, std::uint64_t, std::uint64_t, double*, idx, const SampleParams&, int,
                            bool);

}  // namespace fastnorm
