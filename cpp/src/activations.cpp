// Activation functions: each is a small struct with forward(x) and backward(dy, x) written as the maths, plus
// backward_from_output(dy, y) where y alone determines the derivative.  The loops, ISA dispatch and threading
// are shared below; nothing here knows about SIMD widths or threads.
#include "fastnorm/activations.h"

#include <limits>
#include <stdexcept>
#include <type_traits>

#include "fastnorm/blocked.h"
#include "fastnorm/channels.h"
#include "fastnorm/parallel.h"
#include "fastnorm/simd_math.h"

namespace fastnorm {
namespace {

using namespace math;

template <class T>
struct Params {
  T a, b;
};

// NaN where x is NaN, so that a derivative built from comparisons still propagates NaN.
template <class T>
FASTNORM_INLINE T nan_or(T x, T value) {
  return x != x ? x : value;
}

struct Sigmoid {
  static constexpr bool compute_bound = true;
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T>) { return sigmoid_(x); }
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) {
    const Logistic<T> l = logistic(x);
    return dy * (l.s * l.sc);
  }
  template <class T>
  static FASTNORM_INLINE T backward_from_output(T dy, T y, Params<T>) { return dy * (y * (T(1) - y)); }
};

struct Tanh {
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T>) { return tanh_(x); }
  // 1 - tanh(x)^2 = sech(x)^2 = 4e / (1 + e)^2 with e = exp(-2|x|): no cancellation where tanh is near +-1.
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) {
    const T e = exp_nonpositive(T(-2) * abs_(x)).value();
    const T d = T(1) + e;
    return dy * (T(4) * e / (d * d));
  }
  template <class T>
  static FASTNORM_INLINE T backward_from_output(T dy, T y, Params<T>) { return dy * ((T(1) - y) * (T(1) + y)); }
};

struct Relu {
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T>) { return x <= T(0) ? T(0) : x; }  // NaN stays NaN
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) { return dy * (x > T(0) ? T(1) : nan_or(x, T(0))); }
  template <class T>
  static FASTNORM_INLINE T backward_from_output(T dy, T y, Params<T> p) { return backward(dy, y, p); }
};

struct LeakyRelu {  // a = negative_slope
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T> p) { return x > T(0) ? x : p.a * x; }
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T> p) { return dy * (x > T(0) ? T(1) : nan_or(x, p.a)); }
};

struct Elu {  // a = alpha
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T> p) { return x > T(0) ? x : p.a * expm1_nonpositive(x); }
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T> p) {
    return dy * (x > T(0) ? T(1) : p.a * exp_nonpositive(x).value());
  }
  // For x <= 0, alpha exp(x) = y + alpha.
  template <class T>
  static FASTNORM_INLINE T backward_from_output(T dy, T y, Params<T> p) {
    return dy * (y > T(0) ? T(1) : y + p.a);
  }
};

struct Selu {  // Klambauer et al. 2017, constants to 20 digits
  static constexpr double alpha = 1.6732632423543772848;
  static constexpr double scale = 1.0507009873554804934;
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T>) {
    return T(scale) * (x > T(0) ? x : T(alpha) * expm1_nonpositive(x));
  }
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) {
    return dy * (x > T(0) ? T(scale) : T(scale * alpha) * exp_nonpositive(x).value());
  }
};

struct Gelu {  // x Phi(x), Hendrycks & Gimpel 2016
  static constexpr bool compute_bound = true;
  // x Phi(x) = x Phi(-|x|) for x < 0, x (1 - Phi(-|x|)) otherwise; in the tail it is rounded once (see
  // NormalTail).  Below -normal_tail_max it rounds to -0: clamping x there gives that, and -0 at -inf.
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T>) {
    constexpr T lim = normal_tail_traits<T>::max, s2 = ExpParts<T>::s2;
    const T xc = x < -lim ? -lim : x;
    const NormalTail<T> n = normal_tail(normal_tail_arg(x));
    return xc < T(0) ? (xc * n.tail_s) * s2 : xc * (T(1) - n.tail_s * s2);
  }
  // Phi(x) + x phi(x); phi rounds to 0 from normal_tail_max on (and 0 * inf is 0 there).
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) {
    constexpr T lim = normal_tail_traits<T>::max, s2 = ExpParts<T>::s2;
    const T a = normal_tail_arg(x);
    const NormalTail<T> n = normal_tail(a);
    const T tail = n.tail_s * s2;
    const T pdf = a < lim ? n.e_s * (s2 * T(0.39894228040143267794)) : T(0);
    return dy * ((x < T(0) ? tail : T(1) - tail) + mul_or_zero(x, pdf));
  }
};

// 0.5 (1 + tanh(u)) = sigmoid(2u), which keeps the negative tail free of cancellation.
struct GeluTanh {
  static constexpr bool compute_bound = true;
  static constexpr double k0 = 0.79788456080286535588;  // sqrt(2 / pi)
  static constexpr double k1 = 0.044715;
  template <class T>
  static FASTNORM_INLINE T two_u(T x) { return T(2 * k0) * (x + T(k1) * x * x * x); }
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T>) {
    const T u2 = two_u(x);
    return with_limits(x, logistic(u2).s_times(x, u2), T(-0.0), x);
  }
  // d/dx = s + x * 2 s (1 - s) * du/dx,  du/dx = k0 (1 + 3 k1 x^2)
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) {
    const Logistic<T> l = logistic(two_u(x));
    const T du = T(k0) * (T(1) + T(3 * k1) * x * x);
    return dy * with_limits(x, l.s + l.s_sc_times(T(2) * x * du), T(0), T(1));
  }
};

struct Silu {  // x sigmoid(x), a.k.a. swish
  static constexpr bool compute_bound = true;
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T>) {
    return with_limits(x, logistic(x).s_times(x, x), T(-0.0), x);
  }
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) {
    const Logistic<T> l = logistic(x);
    return dy * with_limits(x, l.s + l.s_sc_times(x), T(0), T(1));
  }
};

struct Softplus {  // a = beta, b = threshold; linear where beta x > threshold, as in PyTorch
  static constexpr bool compute_bound = true;
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T> p) {
    const T bx = p.a * x;
    const T sp = (bx > T(0) ? bx : T(0)) + log1p_(exp_nonpositive(-abs_(bx)).value());
    return bx > p.b ? x : sp / p.a;
  }
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T> p) {
    const T bx = p.a * x;
    return dy * (bx > p.b ? T(1) : sigmoid_(bx));
  }
};

// Mish (Misra 2019): x tanh(softplus(x)).  With u = exp(-|x|), tanh(softplus(x)) = N / D and
// 1 - tanh^2 = (D - N)(D + N) / D^2 where D - N is exact:
//   x >= 0: N = 1 + 2u,    D = N + 2u^2,  D - N = 2u^2
//   x <  0: N = u (u + 2), D = N + 2,     D - N = 2
struct Mish {
  static constexpr bool compute_bound = true;
  template <class T>
  struct Parts {  // T members only (see simd_math.h)
    T m, s1;      // u = exp(-|x|) = (m * s1) * s2
    T u, n, d, sech2, sig;
    // x tanh(softplus(x)) = x N / D; for x < 0, N = u (u + 2) is small and the product is rounded once
    FASTNORM_INLINE T x_times_t(T x) const {
      return x >= T(0) ? x * (n / d) : ExpParts<T>{m, s1}.times(x * ((u + T(2)) / d));
    }
  };
  template <class T>
  static FASTNORM_INLINE Parts<T> parts(T x) {
    const ExpParts<T> ue = exp_nonpositive(-abs_(x));
    const T u = ue.value();
    const bool pos = x >= T(0);
    const T n = pos ? T(1) + T(2) * u : u * (u + T(2));
    const T dmn = pos ? T(2) * u * u : T(2);
    const T d = n + dmn;
    const T sig = pos ? T(1) / (T(1) + u) : u / (T(1) + u);
    return {ue.m, ue.s1, u, n, d, dmn * (d + n) / (d * d), sig};
  }
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T>) { return with_limits(x, parts(x).x_times_t(x), T(-0.0), x); }
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) {
    const Parts<T> q = parts(x);
    return dy * (q.n / q.d + mul_or_zero(x, q.sech2 * q.sig));
  }
};

struct Hardtanh {  // a = min_val, b = max_val
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T> p) { return clamp(x, p.a, p.b); }
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T> p) {
    return dy * (x > p.a && x < p.b ? T(1) : nan_or(x, T(0)));
  }
};

struct Hardsigmoid {  // relu6(x + 3) / 6
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T>) { return clamp(x + T(3), T(0), T(6)) / T(6); }
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) {
    return dy * (x > T(-3) && x < T(3) ? T(1) / T(6) : nan_or(x, T(0)));
  }
};

struct Hardswish {  // x relu6(x + 3) / 6
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T>) { return mul_or_zero(x, clamp(x + T(3), T(0), T(6))) / T(6); }
  // PyTorch's convention at the kinks: 0 below -3, (2x + 3) / 6 on [-3, 3], 1 above.
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) {
    const T mid = (T(2) * x + T(3)) / T(6);
    return dy * (x < T(-3) ? T(0) : (x <= T(3) ? mid : nan_or(x, T(1))));
  }
};

// Ops whose arithmetic outweighs their memory traffic keep ordinary stores: streaming stores made them 5-45%
// slower (measured at 16M float32, 1 and 2 threads), while the cheap ones gain 20-45% from them.
template <class Op, class = void>
struct compute_bound : std::false_type {};
template <class Op>
struct compute_bound<Op, std::void_t<decltype(Op::compute_bound)>> : std::bool_constant<Op::compute_bound> {};

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
template <class Op, class T>
struct ForwardBody {
  static FASTNORM_INLINE void loop(const std::array<const T*, 1>& in, T* y, idx n, Params<T> p) {
    const T* x = in[0];
#pragma omp simd
    for (idx i = 0; i < n; ++i) y[i] = Op::forward(x[i], p);
  }
  static FASTNORM_INLINE void run(const T* x, T* y, idx n, Params<T> p, bool stream) {
    run_blocked<ForwardBody>(std::array<const T*, 1>{x}, y, n, p, stream);
  }
};

template <class Op, class T>
struct BackwardBody {
  static FASTNORM_INLINE void loop(const std::array<const T*, 2>& in, T* dx, idx n, Params<T> p) {
    const T* dy = in[0];
    const T* x = in[1];
#pragma omp simd
    for (idx i = 0; i < n; ++i) dx[i] = Op::backward(dy[i], x[i], p);
  }
  static FASTNORM_INLINE void run(const T* dy, const T* x, T* dx, idx n, Params<T> p, bool stream) {
    run_blocked<BackwardBody>(std::array<const T*, 2>{dy, x}, dx, n, p, stream);
  }
};

template <class Op, class T>
struct OutputBackwardBody {
  static FASTNORM_INLINE void loop(const std::array<const T*, 2>& in, T* dx, idx n, Params<T> p) {
    const T* dy = in[0];
    const T* y = in[1];
#pragma omp simd
    for (idx i = 0; i < n; ++i) dx[i] = Op::backward_from_output(dy[i], y[i], p);
  }
  static FASTNORM_INLINE void run(const T* dy, const T* y, T* dx, idx n, Params<T> p, bool stream) {
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
  const Params<T> tp = to_params<T>(p);
  visit(op, [&](auto o) {
    using Body = ForwardBody<decltype(o), T>;
    const bool stream = streams<decltype(o)>(n, sizeof(T), fresh_output);
    parallel_for_aligned(y, n, num_threads, [&](idx b, idx e) { isa_call<Body>(x + b, y + b, e - b, tp, stream); });
  });
}

template <class T>
void activation_backward(Activation op, const T* dy, const T* xy, T* dx, idx n, ActivationParams p,
                         bool from_output, int num_threads, bool fresh_output) {
  const Params<T> tp = to_params<T>(p);
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

}  // namespace fastnorm
