// The activation functions as element-wise maths: each a struct with forward(x, p) and backward(dy, x, p)
// (dy times the derivative at x), some with backward_from_output(dy, y, p).  Shared by the activation kernels
// (activations.cpp) and the normalization kernels, which apply one after normalizing (fused post-op).
#pragma once

#include <type_traits>

#include "fastnorm/isa.h"
#include "fastnorm/simd_math.h"

namespace fastnorm {
namespace act {

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
    return logistic(u2).s_times(x < T(-1000) ? T(-1000) : x, u2);  // the factor x clamped as in Silu
  }
  // d/dx = s + x * 2 s (1 - s) * du/dx,  du/dx = k0 (1 + 3 k1 x^2); with x clamped to +-64, where it already
  // rounds to its limits 0 and 1 (and x^2 cannot overflow into inf * 0)
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) {
    const T xc = clamp(x, T(-64), T(64));
    const Logistic<T> l = logistic(two_u(xc));
    const T du = T(k0) * (T(1) + T(3 * k1) * xc * xc);
    return dy * (l.s + l.s_sc_times(T(2) * xc * du));
  }
};

struct Silu {  // x sigmoid(x), a.k.a. swish
  static constexpr bool compute_bound = true;
  // x s(x) with the factor x clamped at -1000 (NaN passes), where the product is already -0 (exp's m is 0
  // there): -inf gives -0 instead of -inf * 0 (NaN), and +inf gives inf * 1 as it is.
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T>) {
    return logistic(x).s_times(x < T(-1000) ? T(-1000) : x, x);
  }
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) {
    const Logistic<T> l = logistic(x);
    return dy * (l.s + l.s_sc_times(clamp(x, T(-1000), T(1000))));  // the factor x clamped: -0 / 0 at +-inf
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
  static FASTNORM_INLINE T forward(T x, Params<T>) {  // -0 at -inf (-inf * 0 there); +inf gives inf * 1
    return x == -std::numeric_limits<T>::infinity() ? T(-0.0) : parts(x).x_times_t(x);
  }
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
  // x itself above 3, where x * 6 would overflow for x > max / 6 (and x * 6 / 6 is x up to rounding)
  static FASTNORM_INLINE T forward(T x, Params<T>) {
    return x > T(3) ? x : mul_or_zero(x, clamp(x + T(3), T(0), T(6))) / T(6);
  }
  // PyTorch's convention at the kinks: 0 below -3, (2x + 3) / 6 on [-3, 3], 1 above.
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T x, Params<T>) {
    const T mid = (T(2) * x + T(3)) / T(6);
    return dy * (x < T(-3) ? T(0) : (x <= T(3) ? mid : nan_or(x, T(1))));
  }
};

// Whether an op's arithmetic outweighs its memory traffic (it declares `compute_bound = true`).
template <class Op, class = void>
struct compute_bound : std::false_type {};
template <class Op>
struct compute_bound<Op, std::void_t<decltype(Op::compute_bound)>> : std::bool_constant<Op::compute_bound> {};

// No activation: the normalization kernels' default.
struct Identity {
  template <class T>
  static FASTNORM_INLINE T forward(T x, Params<T>) { return x; }
  template <class T>
  static FASTNORM_INLINE T backward(T dy, T, Params<T>) { return dy; }
};

}  // namespace act
}  // namespace fastnorm
