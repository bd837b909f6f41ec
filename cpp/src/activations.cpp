// Activation functions: each is a small struct with forward(x) and backward(dy, x) written as the maths, plus
// backward_from_output(dy, y) where y alone determines the derivative.  The loops, ISA dispatch and threading
// are shared below; nothing here knows about SIMD widths or threads.
#include "fastnorm/activations.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include "fastnorm/blocked.h"
#include "fastnorm/channels.h"
#include "fastnorm/narrow.h"
#include "fastnorm/parallel.h"
#include "fastnorm/row_blocks.h"
#include "fastnorm/activation_ops.h"
#include "fastnorm/simd_math.h"

namespace fastnorm {
namespace {

using namespace math;
using namespace act;

// Ops whose arithmetic outweighs their memory traffic keep ordinary stores: streaming stores made them 5-45%
// slower (measured at 16M float32, 1 and 2 threads), while the cheap ones gain 20-45% from them.
template <class Op>
bool streams(idx n, idx element_size, int passes, bool fresh_output) {
  return !compute_bound<Op>::value && !fresh_output && stream_output(n * element_size, passes);
}

template <class Op, class = void>
struct has_output_backward : std::false_type {};
template <class Op>
struct has_output_backward<Op, std::void_t<decltype(&Op::template backward_from_output<float>)>>
    : std::true_type {};

// Calls f(Op{}) for the struct behind `op`: the one switch over activations.
template <class F>
void visit(Activation op, F&& f) {
#define FASTNORM_ACTIVATION_CASE(name, Op) \
  case Activation::name:                   \
    return f(Op{});
  switch (op) {
    FASTNORM_ACTIVATIONS(FASTNORM_ACTIVATION_CASE)
    case Activation::count: break;
  }
#undef FASTNORM_ACTIVATION_CASE
  throw std::invalid_argument("unknown activation id");
}

// float16 / bfloat16 at the baseline level (no F16C: converted value by value either way) go through the float32
// body's baseline function a chunk at a time, widened into L1 and rounded back: the same float arithmetic, without
// compiling every activation again for narrow storage at that level (it was a third of the activations' compile
// time).  FloatBody::run(inputs..., out, n, params, stream) is the float32 body.
template <class FloatBody, class T, std::size_t N>
void through_float(const std::array<const T*, N>& in, T* out, idx n, Params<float> p) {
  constexpr idx kChunk = 1024;
  alignas(64) float wide[N][kChunk];
  alignas(64) float result[kChunk];
  for (idx b = 0; b < n; b += kChunk) {
    const idx len = std::min(kChunk, n - b);
    for (std::size_t k = 0; k < N; ++k) to_float(in[k] + b, wide[k], len);
    if constexpr (N == 1)
      isa_variants<FloatBody>::baseline(static_cast<const float*>(wide[0]), static_cast<float*>(result), len, p,
                                        false);
    else
      isa_variants<FloatBody>::baseline(static_cast<const float*>(wide[0]), static_cast<const float*>(wide[1]),
                                        static_cast<float*>(result), len, p, false);
    from_float(static_cast<const float*>(result), out + b, len);
  }
}

// Serial SIMD bodies, compiled once per ISA level by isa_call; run_blocked sends every element through the
// vector loop (blocked.h), so results never depend on an element's position.
// T is the storage type; values are computed in C = compute_t<T>.  Narrow storage (float16, bfloat16) is widened
// and rounded in registers (narrow.h): the arithmetic and its accuracy are those of float, rounded once to T.
template <class Op, class T>
struct ForwardBody {
  static constexpr bool takes_isa = true;
  using C = compute_t<T>;
  struct F {
    Params<C> p;
    FASTNORM_INLINE C operator()(C x) const { return Op::forward(x, p); }
  };
  template <Isa I>
  static FASTNORM_INLINE void loop(const std::array<const T*, 1>& in, T* y, idx n, Params<C> p) {
    const T* x = in[0];
    if constexpr (is_narrow<T>) {
      map_values<I>(in, y, n, F{p});
    } else {
#pragma omp simd
      for (idx i = 0; i < n; ++i) y[i] = Op::forward(x[i], p);
    }
  }
  template <Isa I>
  static FASTNORM_INLINE void run(const T* x, T* y, idx n, Params<C> p, bool stream) {
    if constexpr (is_narrow<T> && I == Isa::baseline)
      through_float<ForwardBody<Op, float>>(std::array<const T*, 1>{x}, y, n, p);
    else
      run_blocked<ForwardBody, I>(std::array<const T*, 1>{x}, y, n, p, stream);
  }
};

// dx = f'(x) dy, or from the output y where Op has backward_from_output (FromOutput).
template <class Op, class T, bool FromOutput>
struct BackwardBody {
  static constexpr bool takes_isa = true;
  using C = compute_t<T>;
  struct F {
    Params<C> p;
    FASTNORM_INLINE C operator()(C dy, C xy) const {
      if constexpr (FromOutput)
        return Op::backward_from_output(dy, xy, p);
      else
        return Op::backward(dy, xy, p);
    }
  };
  template <Isa I>
  static FASTNORM_INLINE void loop(const std::array<const T*, 2>& in, T* dx, idx n, Params<C> p) {
    if constexpr (is_narrow<T>) {
      map_values<I>(in, dx, n, F{p});
    } else {
      const T* dy = in[0];
      const T* xy = in[1];
      const F f{p};
#pragma omp simd
      for (idx i = 0; i < n; ++i) dx[i] = f(dy[i], xy[i]);
    }
  }
  template <Isa I>
  static FASTNORM_INLINE void run(const T* dy, const T* xy, T* dx, idx n, Params<C> p, bool stream) {
    if constexpr (is_narrow<T> && I == Isa::baseline)
      through_float<BackwardBody<Op, float, FromOutput>>(std::array<const T*, 2>{dy, xy}, dx, n, p);
    else
      run_blocked<BackwardBody, I>(std::array<const T*, 2>{dy, xy}, dx, n, p, stream);
  }
};

template <class T>
Params<T> to_params(ActivationParams p) {
  return {static_cast<T>(p.a), static_cast<T>(p.b)};
}

// ---- PReLU ----------------------------------------------------------------------------------------------------

// One slope for a contiguous run (channels-first layouts).
template <class T>
struct PreluRunForward {
  static FASTNORM_INLINE void run(const T* x, T* y, idx n, T a) {
#pragma omp simd
    for (idx i = 0; i < n; ++i) y[i] = LeakyRelu::forward(x[i], Params<T>{a, T(0)});
  }
};

// One slope per element (inner == 1: a row of `channels` values).
template <class T>
struct PreluRowForward {
  static FASTNORM_INLINE void run(const T* x, const T* alpha, T* y, idx n) {
#pragma omp simd
    for (idx i = 0; i < n; ++i) y[i] = LeakyRelu::forward(x[i], Params<T>{alpha[i], T(0)});
  }
};

// Returns the run's sum of dy x over x <= 0.
template <class T>
struct PreluRunBackward {
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dx, idx n, T a, double* dalpha) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (idx i = 0; i < n; ++i) {  // dy[i] and x[i] read before dx[i] is written: dx may be dy or x
      const T g = dy[i], v = x[i];
      s += v > T(0) ? 0.0 : static_cast<double>(g) * static_cast<double>(v);
      dx[i] = LeakyRelu::backward(g, v, Params<T>{a, T(0)});
    }
    *dalpha += s;
  }
};

template <class T>
struct PreluRowBackward {
  static FASTNORM_INLINE void run(const T* dy, const T* x, const T* alpha, T* dx, idx n, double* dalpha) {
#pragma omp simd
    for (idx i = 0; i < n; ++i) {  // dy[i] and x[i] read before dx[i] is written: dx may be dy or x
      const T g = dy[i], v = x[i];
      dalpha[i] += v > T(0) ? 0.0 : static_cast<double>(g) * static_cast<double>(v);
      dx[i] = LeakyRelu::backward(g, v, Params<T>{alpha[i], T(0)});
    }
  }
};


// ---- Maxout ---------------------------------------------------------------------------------------------------

// NaN wins and the first maximum wins: the order numpy.max / numpy.argmax use.
template <class T>
FASTNORM_INLINE bool takes_over(T candidate, T best) {
  return candidate > best || (candidate != candidate && best == best);
}

template <class T>
struct MaxoutForwardRows {  // rows of (pieces, inner) -> (inner)
  static FASTNORM_INLINE void run(const T* x, T* y, idx rows, idx pieces, idx inner) {
    for (idx r = 0; r < rows; ++r) {
      const T* xr = x + r * pieces * inner;
      T* yr = y + r * inner;
#pragma omp simd
      for (idx i = 0; i < inner; ++i) yr[i] = xr[i];
      for (idx k = 1; k < pieces; ++k) {
#pragma omp simd
        for (idx i = 0; i < inner; ++i) yr[i] = takes_over(xr[k * inner + i], yr[i]) ? xr[k * inner + i] : yr[i];
      }
    }
  }
};

template <class T>
struct MaxoutBackwardRows {
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dx, idx rows, idx pieces, idx inner) {
    for (idx r = 0; r < rows; ++r) {
      const T* xr = x + r * pieces * inner;
      const T* dyr = dy + r * inner;
      T* dxr = dx + r * pieces * inner;
      for (idx i = 0; i < inner; ++i) {
        idx arg = 0;
        T best = xr[i];
        for (idx k = 1; k < pieces; ++k) {
          const T v = xr[k * inner + i];
          if (takes_over(v, best)) {
            best = v;
            arg = k;
          }
        }
        for (idx k = 0; k < pieces; ++k) dxr[k * inner + i] = k == arg ? dyr[i] : T(0);
      }
    }
  }
};

}  // namespace

const std::vector<const char*>& activation_names() {
  static const std::vector<const char*> names = {FASTNORM_ACTIVATIONS(FASTNORM_ENUM_NAME)};
  return names;
}

bool activation_has_output_backward(Activation op) {
  bool has = false;
  visit(op, [&](auto o) { has = has_output_backward<decltype(o)>::value; });
  return has;
}

template <class T>
void activation_forward(Activation op, const T* x, T* y, idx n, ActivationParams p, int num_threads,
                        bool fresh_output) {
  const Params<compute_t<T>> tp = to_params<compute_t<T>>(p);
  visit(op, [&](auto o) {
    using Body = ForwardBody<decltype(o), T>;
    const bool stream = streams<decltype(o)>(n, sizeof(T), 2, fresh_output);
    parallel_for_aligned(y, n, num_threads, [&](idx b, idx e) { isa_call<Body>(x + b, y + b, e - b, tp, stream); });
  });
}

template <class T>
void activation_backward(Activation op, const T* dy, const T* xy, T* dx, idx n, ActivationParams p,
                         bool from_output, int num_threads, bool fresh_output) {
  const Params<compute_t<T>> tp = to_params<compute_t<T>>(p);
  visit(op, [&](auto o) {
    using Op = decltype(o);
    const bool stream = streams<Op>(n, sizeof(T), 3, fresh_output);
    if (!from_output) {
      parallel_for_aligned(dx, n, num_threads, [&](idx b, idx e) {
        isa_call<BackwardBody<Op, T, false>>(dy + b, xy + b, dx + b, e - b, tp, stream);
      });
    } else if constexpr (has_output_backward<Op>::value) {
      parallel_for_aligned(dx, n, num_threads, [&](idx b, idx e) {
        isa_call<BackwardBody<Op, T, true>>(dy + b, xy + b, dx + b, e - b, tp, stream);
      });
    } else {
      throw std::invalid_argument(std::string(activation_names()[static_cast<int>(op)]) +
                                  " has no backward from its output");
    }
  });
}

template <class T>
void prelu_forward(const T* x, const T* alpha, T* y, idx outer, idx channels, idx inner, int num_threads) {
  const idx n = outer * channels * inner;
  if (n == 0) return;
  if (inner == 1) {
    parallel_for(outer, rows_per_task(channels), num_threads, [&](idx r0, idx r1) {
      for (idx r = r0; r < r1; ++r)
        isa_call<PreluRowForward<T>>(x + r * channels, alpha, y + r * channels, channels);
    });
    return;
  }
  parallel_for(n, kElementwiseGrain, num_threads, [&](idx b, idx e) {
    for_each_channel_run(b, e, channels, inner,
                         [&](idx i, idx len, idx c) { isa_call<PreluRunForward<T>>(x + i, y + i, len, alpha[c]); });
  });
}

template <class T>
void prelu_backward(const T* dy, const T* x, const T* alpha, T* dx, double* dalpha, idx outer, idx channels,
                    idx inner, int num_threads) {
  // Each task accumulates its own per-channel partial sums; they are added up in task order afterwards.
  const idx rows = outer * channels;
  const bool per_element = inner == 1;
  const idx task_rows = per_element ? rows_per_task(channels) : rows_per_task(inner);
  const idx task_elements = per_element ? task_rows * channels : task_rows * inner;
  const idx n = rows * inner;
  for (idx c = 0; c < channels; ++c) dalpha[c] = 0;
  if (n == 0) return;
  const idx tasks = (n + task_elements - 1) / task_elements;
  if (tasks * channels > std::max<idx>(n / 4, kElementwiseGrain)) {
    // So many channels that the tasks' partial sums would outgrow the input: each task owns a block of channels
    // instead and walks every outer row in order, so each channel's sum still adds up in one fixed order.
    parallel_for(channels, rows_per_task(outer * inner), num_threads, [&](idx c0, idx c1) {
      for (idx o = 0; o < outer; ++o) {
        const idx i = (o * channels + c0) * inner;
        if (per_element) {
          isa_call<PreluRowBackward<T>>(dy + i, x + i, alpha + c0, dx + i, c1 - c0, dalpha + c0);
        } else {
          for (idx c = c0; c < c1; ++c) {
            const idx at = i + (c - c0) * inner;
            isa_call<PreluRunBackward<T>>(dy + at, x + at, dx + at, inner, alpha[c], dalpha + c);
          }
        }
      }
    });
    return;
  }
  TaskPartials<1> partials(tasks, channels);
  parallel_for(tasks, 1, num_threads, [&](idx t0, idx t1) {
    for (idx t = t0; t < t1; ++t) {
      double* part = partials.row(0, t);
      const idx b = t * task_elements, e = std::min(n, b + task_elements);
      if (per_element) {
        for (idx i = b; i < e; i += channels)
          isa_call<PreluRowBackward<T>>(dy + i, x + i, alpha, dx + i, channels, part);
      } else {
        for_each_channel_run(b, e, channels, inner, [&](idx i, idx len, idx c) {
          isa_call<PreluRunBackward<T>>(dy + i, x + i, dx + i, len, alpha[c], part + c);
        });
      }
    }
  });
  partials.total({dalpha}, num_threads);
}

template <class T>
void maxout_forward(const T* x, T* y, idx outer, idx groups, idx pieces, idx inner, int num_threads) {
  if (outer * groups * pieces * inner == 0) return;  // no work, however long the other axes
  parallel_for(outer * groups, rows_per_task(pieces * inner), num_threads, [&](idx r0, idx r1) {
    isa_call<MaxoutForwardRows<T>>(x + r0 * pieces * inner, y + r0 * inner, r1 - r0, pieces, inner);
  });
}

template <class T>
void maxout_backward(const T* dy, const T* x, T* dx, idx outer, idx groups, idx pieces, idx inner,
                     int num_threads) {
  if (outer * groups * pieces * inner == 0) return;
  parallel_for(outer * groups, rows_per_task(pieces * inner), num_threads, [&](idx r0, idx r1) {
    isa_call<MaxoutBackwardRows<T>>(dy + r0 * inner, x + r0 * pieces * inner, dx + r0 * pieces * inner, r1 - r0,
                                    pieces, inner);
  });
}

#define FASTNORM_INSTANTIATE_ACTIVATIONS(T)                                                                     \
  template void activation_forward<T>(Activation, const T*, T*, idx, ActivationParams, int, bool);            \
  template void activation_backward<T>(Activation, const T*, const T*, T*, idx, ActivationParams, bool, int,  \
                                       bool);
#define FASTNORM_INSTANTIATE(T)                                                                                 \
  FASTNORM_INSTANTIATE_ACTIVATIONS(T)                                                                         \
  template void prelu_forward<T>(const T*, const T*, T*, idx, idx, idx, int);                                  \
  template void prelu_backward<T>(const T*, const T*, const T*, T*, double*, idx, idx, idx, int);              \
  template void maxout_forward<T>(const T*, T*, idx, idx, idx, idx, int);                                      \
  template void maxout_backward<T>(const T*, const T*, T*, idx, idx, idx, idx, int);
FASTNORM_INSTANTIATE(float)
FASTNORM_INSTANTIATE(double)
#if FASTNORM_HAVE_HALF
FASTNORM_INSTANTIATE_ACTIVATIONS(half)  // narrow storage: activations only
#endif
FASTNORM_INSTANTIATE_ACTIVATIONS(bf16)
#undef FASTNORM_INSTANTIATE
#undef FASTNORM_INSTANTIATE_ACTIVATIONS

}  // namespace fastnorm
