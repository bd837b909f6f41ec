// SIMD dispatch: every kernel body is compiled once per ISA level and one is picked at import.
//
// A kernel body is a struct with an always-inline static `run(...)` holding a `#pragma omp simd` loop.
// `isa_call<Body>(args...)` runs it through the function compiled for the active level:
//   baseline  x86-64 (SSE2), or whatever the compiler targets on other architectures
//   v3        x86-64-v3 (AVX2, FMA, F16C)
//   v4        x86-64-v4 (AVX-512 F/BW/CD/DQ/VL)
// The level is chosen from the CPU, or forced with FASTNORM_ISA=baseline|v3|v4 (see isa.cpp), so the tests can
// run every level on one machine.  Bodies must be serial: a `#pragma omp parallel` inside a target-attributed
// function would be outlined from the default-ISA code (research/build.md, 3.2).  Threads live in parallel.h.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#define FASTNORM_INLINE inline __attribute__((always_inline))

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FASTNORM_NO_DISPATCH)
#define FASTNORM_MULTI_ISA 1
#define FASTNORM_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#define FASTNORM_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#else
#define FASTNORM_MULTI_ISA 0
#endif

// IEEE half precision as a storage type (computed in float): GCC 12+ and Clang 15+ on x86-64 have _Float16,
// converted with F16C instructions at the v3 and v4 levels.
#if defined(__x86_64__) && defined(__FLT16_MAX__)
#define FASTNORM_HAVE_HALF 1
#else
#define FASTNORM_HAVE_HALF 0
#endif

namespace fastnorm {

using idx = std::int64_t;
#if FASTNORM_HAVE_HALF
using half = _Float16;
#endif
// bfloat16 as a storage type (computed in float): the high 16 bits of a float32, as ml_dtypes.bfloat16 stores it.
struct bf16 {
  std::uint16_t bits;
};

// The type a kernel computes in for values stored as T: float for half, T otherwise.
template <class T>
struct compute_type {
  using type = T;
};
#if FASTNORM_HAVE_HALF
template <>
struct compute_type<half> {
  using type = float;
};
#endif
template <>
struct compute_type<bf16> {
  using type = float;
};
template <class T>
using compute_t = typename compute_type<T>::type;

// M(T) for every storage type of the normalization kernels: float, double, bf16, and half where the build has it
// (explicit instantiations).
#if FASTNORM_HAVE_HALF
#define FASTNORM_FOR_EACH_STORAGE(M) M(float) M(double) M(bf16) M(half)
#else
#define FASTNORM_FOR_EACH_STORAGE(M) M(float) M(double) M(bf16)
#endif

enum class Isa : int { baseline = 0, v3 = 1, v4 = 2 };

// The level kernels run at.  Chosen on first use (CPU and FASTNORM_ISA); set_isa changes it.
Isa active_isa();
// Switch level; throws std::invalid_argument if this CPU or build cannot run it.
void set_isa(Isa isa);
// Highest level this CPU and build support.
Isa best_supported_isa();
bool isa_supported(Isa isa);
const char* isa_name(Isa isa);
// Parses "baseline", "v3", "v4"; throws std::invalid_argument naming the valid values otherwise.
Isa parse_isa(const std::string& name);

// A body that needs to know the level it is compiled for (narrow.h's conversions) declares
// `static constexpr bool takes_isa = true;` and has `template <Isa I> static void run(...)` instead of `run`.
template <class Body, class = void>
struct takes_isa : std::false_type {};
template <class Body>
struct takes_isa<Body, std::void_t<decltype(Body::takes_isa)>> : std::bool_constant<Body::takes_isa> {};

template <Isa I, class Body, class... A>
FASTNORM_INLINE void run_body(A... a) {
  if constexpr (takes_isa<Body>::value)
    Body::template run<I>(a...);
  else
    Body::run(a...);
}

template <class Body>
struct isa_variants {
  template <class... A>
  static void baseline(A... a) { run_body<Isa::baseline, Body>(a...); }
#if FASTNORM_MULTI_ISA
  template <class... A>
  FASTNORM_TARGET_V3 static void v3(A... a) { run_body<Isa::v3, Body>(a...); }
  template <class... A>
  FASTNORM_TARGET_V4 static void v4(A... a) { run_body<Isa::v4, Body>(a...); }
#endif
};

// Run Body::run(args...) compiled for the active ISA level.
template <class Body, class... A>
inline void isa_call(A... a) {
#if FASTNORM_MULTI_ISA
  switch (active_isa()) {
    case Isa::v4: return isa_variants<Body>::v4(a...);
    case Isa::v3: return isa_variants<Body>::v3(a...);
    case Isa::baseline: break;
  }
#endif
  isa_variants<Body>::baseline(a...);
}

}  // namespace fastnorm
