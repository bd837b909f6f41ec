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
#include "fastnorm/parallel.h"
#include "fastnorm/activation_ops.h"
#include "fastnorm/simd_math.h"

namespace fastnorm {
namespace {

using namespace math;
using namespace act;

// Ops whose arithmetic outweighs their memory traffic keep ordinary stores: streaming stores made them 5-45%
// slower (measured at 16M float32, 1 and 2 threads), while the cheap ones gain 20-45% from them.
template <class Op>
bool streams(idx n, idx element_size, bool fresh_output) {
  return !compute_bound<Op>::value && !fresh_output && stream_output(n * element_size);
}

template <class Op, class = void>
struct has_output_backward : std::false_type {};
template <class Op>
struct has_output_backward<Op, std::void_t<decltype(&Op::template backward_from_output<float>)>>
    : std::true_type {};

// Calls f(Op{}) for the struct behind `op`: the one switch over activations.
template <class F>
void visit(Activation op, F&& f) {
  switch (op) {
    case Activation::sigmoid: return f(Sigmoid{});
    case Activation::tanh: return f(Tanh{});
    case Activation::relu: return f(Relu{});
    case Activation::leaky_relu: return f(LeakyRelu{});
    case Activation::elu: return f(Elu{});
    case Activation::selu: return f(Selu{});
    case Activation::gelu: return f(Gelu{});
    case Activation::gelu_tanh: return f(GeluTanh{});
    case Activation::silu: return f(Silu{});
    case Activation::softplus: return f(Softplus{});
    case Activation::mish: return f(Mish{});
    case Activation::hardtanh: return f(Hardtanh{});
    case Activation::hardsigmoid: return f(Hardsigmoid{});
    case Activation::hardswish: return f(Hardswish{});
    case Activation::count: break;
  }
  throw std::invalid_argument("unknown activation id");
}

// Serial SIMD bodies, compiled once per ISA level by isa_call; run_blocked sends every element through the
// vector loop (blocked.h), so results never depend on an element's position.
// T is the storage type; values are computed in C = compute_t<T> (float for half: read and written as half, the
// arithmetic and its accuracy those of float, rounded once to half at the end).
template <class Op, class T>
struct ForwardBody {
  static constexpr std::size_t inputs = 1;
  using C = compute_t<T>;
  static FASTNORM_INLINE void loop(const std::array<const T*, 1>& in, T* y, idx n, Params<C> p) {
    const T* x = in[0];
#pragma omp simd
    for (idx i = 0; i < n; ++i) y[i] = static_cast<T>(Op::forward(static_cast<C>(x[i]), p));
  }
  static FASTNORM_INLINE void run(const T* x, T* y, idx n, Params<C> p, bool stream) {
    run_blocked<ForwardBody>(std::array<const T*, 1>{x}, y, n, p, stream);
  }
};

template <class Op, class T>
struct BackwardBody {
  static constexpr std::size_t inputs = 2;
  using C = compute_t<T>;
  static FASTNORM_INLINE void loop(const std::array<const T*, 2>& in, T* dx, idx n, Params<C> p) {
    const T* dy = in[0];
    const T* x = in[1];
#pragma omp simd
    for (idx i = 0; i < n; ++i) dx[i] = static_cast<T>(Op::backward(static_cast<C>(dy[i]), static_cast<C>(x[i]), p));
  }
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dx, idx n, Params<C> p, bool stream) {
    run_blocked<BackwardBody>(std::array<const T*, 2>{dy, x}, dx, n, p, stream);
  }
};

template <class Op, class T>
struct OutputBackwardBody {
  static constexpr std::size_t inputs = 2;
  using C = compute_t<T>;
  static FASTNORM_INLINE void loop(const std::array<const T*, 2>& in, T* dx, idx n, Params<C> p) {
    const T* dy = in[0];
    const T* y = in[1];
#pragma omp simd
    for (idx i = 0; i < n; ++i)
      dx[i] = static_cast<T>(Op::backward_from_output(static_cast<C>(dy[i]), static_cast<C>(y[i]), p));
  }
  static FASTNORM_INLINE void run(const T* dy, const T* y, T* dx, idx n, Params<C> p, bool stream) {
    run_blocked<OutputBackwardBody>(std::array<const T*, 2>{dy, y}, dx, n, p, stream);
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
    for (idx i = 0; i < n; ++i) {
      dx[i] = LeakyRelu::backward(dy[i], x[i], Params<T>{a, T(0)});
      s += x[i] > T(0) ? 0.0 : static_cast<double>(dy[i]) * static_cast<double>(x[i]);
    }
    *dalpha += s;
  }
};

template <class T>
struct PreluRowBackward {
  static FASTNORM_INLINE void run(const T* dy, const T* x, const T* alpha, T* dx, idx n, double* dalpha) {
#pragma omp simd
    for (idx i = 0; i < n; ++i) {
      dx[i] = LeakyRelu::backward(dy[i], x[i], Params<T>{alpha[i], T(0)});
      dalpha[i] += x[i] > T(0) ? 0.0 : static_cast<double>(dy[i]) * static_cast<double>(x[i]);
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
  static const std::vector<const char*> names = {
      "sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "gelu_tanh",
      "silu", "softplus", "mish", "hardtanh", "hardsigmoid", "hardswish"};
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
    const bool stream = streams<decltype(o)>(n, sizeof(T), fresh_output);
    parallel_for_aligned(y, n, num_threads, [&](idx b, idx e) { isa_call<Body>(x + b, y + b, e - b, tp, stream); });
  });
}

template <class T>
void activation_backward(Activation op, const T* dy, const T* xy, T* dx, idx n, ActivationParams p,
                         bool from_output, int num_threads, bool fresh_output) {
  const Params<compute_t<T>> tp = to_params<compute_t<T>>(p);
  visit(op, [&](auto o) {
    using Op = decltype(o);
    const bool stream = streams<Op>(n, sizeof(T), fresh_output);
    if (!from_output) {
      parallel_for_aligned(dx, n, num_threads, [&](idx b, idx e) {
        isa_call<BackwardBody<Op, T>>(dy + b, xy + b, dx + b, e - b, tp, stream);
      });
    } else if constexpr (has_output_backward<Op>::value) {
      parallel_for_aligned(dx, n, num_threads, [&](idx b, idx e) {
        isa_call<OutputBackwardBody<Op, T>>(dy + b, xy + b, dx + b, e - b, tp, stream);
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
  const idx tasks = n == 0 ? 0 : (n + task_elements - 1) / task_elements;
  std::vector<double> partial(static_cast<size_t>(tasks * channels), 0.0);
  parallel_for(tasks, 1, num_threads, [&](idx t0, idx t1) {
    for (idx t = t0; t < t1; ++t) {
      double* part = partial.data() + t * channels;
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
  for (idx c = 0; c < channels; ++c) dalpha[c] = 0;
  for (idx t = 0; t < tasks; ++t)
    for (idx c = 0; c < channels; ++c) dalpha[c] += partial[t * channels + c];
}

template <class T>
void maxout_forward(const T* x, T* y, idx outer, idx groups, idx pieces, idx inner, int num_threads) {
  parallel_for(outer * groups, rows_per_task(pieces * inner), num_threads, [&](idx r0, idx r1) {
    isa_call<MaxoutForwardRows<T>>(x + r0 * pieces * inner, y + r0 * inner, r1 - r0, pieces, inner);
  });
}

template <class T>
void maxout_backward(const T* dy, const T* x, T* dx, idx outer, idx groups, idx pieces, idx inner,
                     int num_threads) {
  parallel_for(outer * groups, rows_per_task(pieces * inner), num_threads, [&](idx r0, idx r1) {
    isa_call<MaxoutBackwardRows<T>>(dy + r0 * inner, x + r0 * pieces * inner, dx + r0 * pieces * inner, r1 - r0,
                                    pieces, inner);
  });
}

#define FASTNORM_INSTANTIATE(T)                                                                                 \
  template void activation_forward<T>(Activation, const T*, T*, idx, ActivationParams, int, bool);            \
  template void activation_backward<T>(Activation, const T*, const T*, T*, idx, ActivationParams, bool, int,  \
                                       bool);                                                                 \
  template void prelu_forward<T>(const T*, const T*, T*, idx, idx, idx, int);                                  \
  template void prelu_backward<T>(const T*, const T*, const T*, T*, double*, idx, idx, idx, int);              \
  template void maxout_forward<T>(const T*, T*, idx, idx, idx, idx, int);                                      \
  template void maxout_backward<T>(const T*, const T*, T*, idx, idx, idx, idx, int);
FASTNORM_INSTANTIATE(float)
FASTNORM_INSTANTIATE(double)
#undef FASTNORM_INSTANTIATE
namespace {

// float16 and bfloat16 storage: each sub-block of kStreamStep values is converted to float in an L1 buffer (F16C for
// float16; integer shifts for bfloat16), runs through the float body's loop (padded to whole vector blocks, as
// run_blocked does, so every value takes the vector path), and is rounded back: the bits of computing in float32
// and rounding once.  With `stream`, the rounded values go out through streaming stores, as run_blocked does
// (parallel_for_aligned starts the pieces at whole lines of the output, but for a short head).
template <class Body>
struct FloatLoop {
  static FASTNORM_INLINE void run(const std::array<const float*, Body::inputs>& in, float* out, idx n,
                                  Params<float> p) {
    Body::loop(in, out, n, p);
  }
};

template <class Body, class S, std::size_t N>
void run_narrow(const std::array<const S*, N>& in, S* out, idx n, Params<float> p, bool stream) {
  alignas(64) float buf[N][kStreamStep];
  alignas(64) float res[kStreamStep];
  alignas(64) S narrow[kStreamStep];  // the rounded values, to stream
  for (idx b = 0; b < n; b += kStreamStep) {
    const idx len = std::min(kStreamStep, n - b), padded = (len + kBlock - 1) / kBlock * kBlock;
    std::array<const float*, N> f;
    for (std::size_t k = 0; k < N; ++k) {
      to_float(in[k] + b, buf[k], len);
      std::fill(buf[k] + len, buf[k] + padded, 0.0f);
      f[k] = buf[k];
    }
    isa_call<FloatLoop<Body>>(f, static_cast<float*>(res), padded, p);
    store_row(static_cast<const float*>(res), out + b, len, stream, static_cast<S*>(narrow));
  }
  if (stream) stream_fence();
}

template <class S>
void narrow_forward(Activation op, const S* x, S* y, idx n, ActivationParams p, int num_threads, bool fresh_output) {
  const Params<float> tp = to_params<float>(p);
  visit(op, [&](auto o) {
    const bool stream = streams<decltype(o)>(n, sizeof(S), fresh_output);
    parallel_for_aligned(y, n, num_threads, [&](idx b, idx e) {
      run_narrow<ForwardBody<decltype(o), float>, S, 1>({x + b}, y + b, e - b, tp, stream);
    });
  });
}

template <class S>
void narrow_backward(Activation op, const S* dy, const S* xy, S* dx, idx n, ActivationParams p, bool from_output,
                     int num_threads, bool fresh_output) {
  const Params<float> tp = to_params<float>(p);
  visit(op, [&](auto o) {
    using Op = decltype(o);
    const bool stream = streams<Op>(n, sizeof(S), fresh_output);
    if (!from_output) {
      parallel_for_aligned(dx, n, num_threads, [&](idx b, idx e) {
        run_narrow<BackwardBody<Op, float>, S, 2>({dy + b, xy + b}, dx + b, e - b, tp, stream);
      });
    } else if constexpr (has_output_backward<Op>::value) {
      parallel_for_aligned(dx, n, num_threads, [&](idx b, idx e) {
        run_narrow<OutputBackwardBody<Op, float>, S, 2>({dy + b, xy + b}, dx + b, e - b, tp, stream);
      });
    } else {
      throw std::invalid_argument(std::string(activation_names()[static_cast<int>(op)]) +
                                  " has no backward from its output");
    }
  });
}

}  // namespace

// The half types' entry points: the narrow path above.
#define FASTNORM_NARROW(S)                                                                                      \
  template <>                                                                                                   \
  void activation_forward<S>(Activation op, const S* x, S* y, idx n, ActivationParams p, int num_threads,      \
                             bool fresh_output) {                                                               \
    narrow_forward(op, x, y, n, p, num_threads, fresh_output);                                                  \
  }                                                                                                             \
  template <>                                                                                                   \
  void activation_backward<S>(Activation op, const S* dy, const S* xy, S* dx, idx n, ActivationParams p,       \
                              bool from_output, int num_threads, bool fresh_output) {                           \
    narrow_backward(op, dy, xy, dx, n, p, from_output, num_threads, fresh_output);                              \
  }
#if FASTNORM_HAVE_HALF
FASTNORM_NARROW(half)
#endif
FASTNORM_NARROW(bf16)
#undef FASTNORM_NARROW

}  // namespace fastnorm
