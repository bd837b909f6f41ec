// Activation functions, forward and backward, on contiguous float32/float64 buffers.
//
// Every function here is strict and thread-safe: contiguous buffers of n elements, output may alias the input
// exactly (in place) but must not overlap it partially, `num_threads` <= 0 means OpenMP's default.  The Python
// layer (python/fastnorm/activations.py) turns NumPy arrays into such buffers.
#pragma once

#include <vector>

#include "fastnorm/enum_table.h"
#include "fastnorm/isa.h"

namespace fastnorm {

// Elementwise activations and the act:: struct (activation_ops.h) behind each; the order is the ids the bindings
// hand to Python with activation_names().
#define FASTNORM_ACTIVATIONS(X)  \
  X(sigmoid, Sigmoid)            \
  X(tanh, Tanh)                  \
  X(relu, Relu)                  \
  X(leaky_relu, LeakyRelu)       /* a = negative_slope */ \
  X(elu, Elu)                    /* a = alpha */ \
  X(selu, Selu)                  \
  X(gelu, Gelu)                  /* exact: x Phi(x) */ \
  X(gelu_tanh, GeluTanh)         /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */ \
  X(silu, Silu)                  \
  X(softplus, Softplus)          /* a = beta, b = threshold */ \
  X(mish, Mish)                  \
  X(hardtanh, Hardtanh)          /* a = min_val, b = max_val */ \
  X(hardsigmoid, Hardsigmoid)    \
  X(hardswish, Hardswish)

enum class Activation : int { FASTNORM_ACTIVATIONS(FASTNORM_ENUM_VALUE) count };

// Python-facing names in enum order ("sigmoid", "tanh", ..., "gelu_tanh", ...).
const std::vector<const char*>& activation_names();
// Whether activation_backward can take the forward's output y instead of x.
bool activation_has_output_backward(Activation op);

struct ActivationParams {
  double a = 0;
  double b = 0;
};

// fresh_output: the output was just allocated (its pages not yet touched).  Large outputs are otherwise written
// with streaming stores (blocked.h), which cost more than they save on untouched pages.
template <class T>
void activation_forward(Activation op, const T* x, T* y, idx n, ActivationParams p, int num_threads,
                        bool fresh_output = false);

// dx = dy * f'(x); with from_output, `xy` holds y = f(x) instead of x (only where has_output_backward).
template <class T>
void activation_backward(Activation op, const T* dy, const T* xy, T* dx, idx n, ActivationParams p,
                         bool from_output, int num_threads, bool fresh_output = false);

// PReLU on x viewed as (outer, channels, inner): y = x > 0 ? x : alpha[c] x.
template <class T>
void prelu_forward(const T* x, const T* alpha, T* y, idx outer, idx channels, idx inner, int num_threads);

// dx = dy * (x > 0 ? 1 : alpha[c]); dalpha[c] = sum over x <= 0 of dy x, accumulated in double in a fixed order.
template <class T>
void prelu_backward(const T* dy, const T* x, const T* alpha, T* dx, double* dalpha, idx outer, idx channels,
                    idx inner, int num_threads);

// Maxout on x viewed as (outer, groups, pieces, inner): y[o, g, i] = max over k of x[o, g, k, i].
// NaN wins (as in numpy.max); ties go to the first piece.
template <class T>
void maxout_forward(const T* x, T* y, idx outer, idx groups, idx pieces, idx inner, int num_threads);

// dx[o, g, k, i] = dy[o, g, i] where k is the arg-max of the forward, else 0.
template <class T>
void maxout_backward(const T* dy, const T* x, T* dx, idx outer, idx groups, idx pieces, idx inner,
                     int num_threads);

}  // namespace fastnorm
