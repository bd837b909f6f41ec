// The normalizations' common calls: a call made the common way (float32 arrays as NumPy makes them, parameters of
// the right shape, eps a float, no out=, no fused activation, the default thread count) is checked and run here in
// one step, since on a small input the Python layer's general argument handling costs more than the kernel.  Each
// function returns None for any other call and the Python function then takes its general path, which owns every
// error message; both run the same kernel with the same arguments, and the statistics' float64 arithmetic here is
// NumPy's, operation for operation (no contraction: CMakeLists.txt), so they give the same bits.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "fastnorm/batch_norm.h"
#include "fastnorm/buffers.h"
#include "fastnorm/group_norm.h"
#include "fastnorm/layer_norm.h"
#include "py_arrays.h"

namespace fastnorm::py_arrays {
namespace {

using fastnorm::idx;

using Shape = std::vector<py::ssize_t>;

// h as an array NumPy made of C++ type T (an ndarray, not a subclass; native byte order; C-contiguous; aligned), or
// nullopt.
template <class T>
std::optional<py::array> plain(py::handle h) {
  if (Py_TYPE(h.ptr()) != py::detail::npy_api::get().PyArray_Type_) return std::nullopt;
  auto a = py::reinterpret_borrow<py::array>(h);
  constexpr int need = py::array::c_style | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
  if ((a.flags() & need) != need || !is_dtype_of<T>(a.dtype())) return std::nullopt;
  return a;
}

Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

// h as a plain 1-D array of n values of T, or nullopt.
template <class T>
std::optional<py::array> plain_vector(py::handle h, idx n) {
  auto a = plain<T>(h);
  if (!a || a->ndim() != 1 || a->shape(0) != n) return std::nullopt;
  return a;
}

// A row norm's parameter (gamma, beta) of D float32 values: None (`out` left empty) or a plain vector; false for
// anything else.
bool row_param(py::handle h, idx D, std::optional<py::array>& out) {
  out.reset();
  if (h.is_none()) return true;
  out = plain_vector<float>(h, D);
  return out.has_value();
}

// An uninitialised result: from the buffer cache from 1 MiB (as fastnorm._memory.empty), else from NumPy.
template <class T>
py::array result(const Shape& shape) {
  std::size_t bytes = sizeof(T);
  for (py::ssize_t s : shape) bytes *= static_cast<std::size_t>(s);
  if (bytes >= (std::size_t(1) << 20) && fastnorm::buffers::info().limit > 0)
    return empty(shape, py::dtype::of<T>());
  return py::array_t<T>(shape);
}

// eps as the general path passes it on unchanged: a float in [1e-30, inf) (smaller ones, which the general path
// checks against float32's range, go there); None: float32's machine epsilon where that is the default.
std::optional<double> common_eps(py::handle eps, bool none_is_machine_eps) {
  if (eps.is_none() && none_is_machine_eps) return static_cast<double>(std::numeric_limits<float>::epsilon());
  if (!PyFloat_CheckExact(eps.ptr())) return std::nullopt;
  const double e = PyFloat_AS_DOUBLE(eps.ptr());
  if (!(e >= 1e-30 && e < std::numeric_limits<double>::infinity())) return std::nullopt;
  return e;
}

// axis as a Python int naming one of ndim axes, in [0, ndim), or nullopt.
std::optional<int> common_axis(py::handle axis, int ndim) {
  if (!PyLong_CheckExact(axis.ptr())) return std::nullopt;
  int overflow = 0;
  const long a = PyLong_AsLongAndOverflow(axis.ptr(), &overflow);
  if (overflow || a < -ndim || a >= ndim) return std::nullopt;
  return static_cast<int>(a < 0 ? a + ndim : a);
}

// A parameter of n values for the float64 kernels (gamma, beta, statistics): None (nullptr), or a plain 1-D float32
// or float64 array of n values, widened into `widened` if float32 (as the general path's astype); false otherwise.
bool common_param(py::handle h, idx n, std::vector<double>& widened, const double*& values) {
  values = nullptr;
  if (h.is_none()) return true;
  if (auto a = plain_vector<double>(h, n)) {
    values = cptr<double>(*a);
    return true;
  }
  auto a = plain_vector<float>(h, n);
  if (!a) return false;
  const float* f = cptr<float>(*a);
  widened.assign(f, f + n);
  values = widened.data();
  return true;
}

// Statistics of the given shape, plain float64.
std::optional<py::array> common_stats(py::handle h, const Shape& shape) {
  auto a = plain<double>(h);
  if (!a || shape_of(*a) != shape) return std::nullopt;
  return a;
}

// float32 values of float64 sums (the general path's astype), in a new array of shape `shape`.
py::array narrowed(const std::vector<double>& v, const Shape& shape) {
  py::array_t<float> out(shape);
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

// Layer norm (centered) or RMS norm over the last axis: (y, mean, rstd), the statistics of x's leading shape.
py::object row_norm_common(py::handle x_, py::handle gamma_, py::handle beta_, py::handle axis, py::handle eps_,
                           bool centered, int num_threads) {
  const auto x = plain<float>(x_);
  if (!x || x->ndim() < 1 || x->size() == 0) return py::none();
  const int nd = static_cast<int>(x->ndim());
  const auto ax = common_axis(axis, nd);
  const auto eps = common_eps(eps_, true);
  if (!ax || *ax != nd - 1 || !eps) return py::none();
  const idx D = x->shape(nd - 1), M = x->size() / D;
  std::optional<py::array> g, b;
  if (!row_param(gamma_, D, g) || !row_param(beta_, D, b)) return py::none();
  const Shape shape = shape_of(*x), lead(shape.begin(), shape.end() - 1);
  py::array y = result<float>(shape);
  py::array_t<double> mean(lead), rstd(lead);
  const float* xp = cptr<float>(*x);
  float* yp = mptr<float>(y);
  double* mp = mean.mutable_data();
  double* rp = rstd.mutable_data();
  {
    py::gil_scoped_release nogil;
    fastnorm::ln_forward<float>(xp, yp, M, D, *eps, centered, cptr_or_null<float>(g), cptr_or_null<float>(b), mp, rp,
                                num_threads);
  }
  return py::make_tuple(y, mean, rstd);
}

// Their backward: (dx, dgamma, dbeta), the parameter gradients None without gamma or with dx_only.
py::object row_norm_backward_common(py::handle dy_, py::handle x_, py::handle mean_, py::handle rstd_,
                                    py::handle gamma_, py::handle axis, bool centered, bool dx_only,
                                    int num_threads) {
  const auto x = plain<float>(x_), dy = plain<float>(dy_);
  if (!x || !dy || x->ndim() < 1 || x->size() == 0) return py::none();
  const Shape shape = shape_of(*x), lead(shape.begin(), shape.end() - 1);
  const int nd = static_cast<int>(x->ndim());
  const auto ax = common_axis(axis, nd);
  if (shape_of(*dy) != shape || !ax || *ax != nd - 1) return py::none();
  const idx D = x->shape(nd - 1), M = x->size() / D;
  const auto rstd = common_stats(rstd_, lead);
  const auto mean = centered ? common_stats(mean_, lead) : std::optional<py::array>();
  if (!rstd || (centered && !mean)) return py::none();
  std::optional<py::array> g;
  if (!row_param(gamma_, D, g)) return py::none();
  const bool param_grads = g && !dx_only;
  std::vector<double> zeros(centered ? 0 : M), dgamma(param_grads ? D : 0), dbeta(param_grads ? D : 0);
  py::array dx = result<float>(shape);
  const float *dyp = cptr<float>(*dy), *xp = cptr<float>(*x), *gp = cptr_or_null<float>(g);
  const double *mp = centered ? cptr<double>(*mean) : zeros.data(), *rp = cptr<double>(*rstd);
  float* dxp = mptr<float>(dx);
  {
    py::gil_scoped_release nogil;
    fastnorm::ln_backward<float>(dyp, xp, dxp, M, D, mp, rp, gp, centered, param_grads ? dgamma.data() : nullptr,
                                 param_grads ? dbeta.data() : nullptr, num_threads);
  }
  if (!param_grads) return py::make_tuple(dx, py::none(), py::none());
  return py::make_tuple(dx, narrowed(dgamma, {D}), narrowed(dbeta, {D}));
}

// x as batch norm's (A, C, B) around a channel axis: false unless x is a plain float32 array of rank >= 2 and
// `axis` names one of its axes.
bool common_channels(const std::optional<py::array>& x, py::handle axis, idx& A, idx& C, idx& B) {
  if (!x || x->ndim() < 2 || x->size() == 0) return false;
  const auto ax = common_axis(axis, static_cast<int>(x->ndim()));
  if (!ax) return false;
  A = 1, B = 1, C = x->shape(*ax);
  for (int i = 0; i < x->ndim(); ++i) (i < *ax ? A : B) *= i == *ax ? 1 : x->shape(i);
  return true;
}

// Batch norm in training, without running statistics: (y, mean, rstd).
py::object batch_norm_common(py::handle x_, py::handle gamma_, py::handle beta_, py::handle axis, py::handle eps_,
                             int num_threads) {
  const auto x = plain<float>(x_);
  idx A, C, B;
  const auto eps = common_eps(eps_, false);
  if (!common_channels(x, axis, A, C, B) || !eps || A * B <= 1) return py::none();
  std::vector<double> gw, bw;
  const double *g, *b;
  if (!common_param(gamma_, C, gw, g) || !common_param(beta_, C, bw, b)) return py::none();
  py::array y = result<float>(shape_of(*x));
  py::array_t<double> mean(C), rstd(C);
  const float* xp = cptr<float>(*x);
  float* yp = mptr<float>(y);
  double *mp = mean.mutable_data(), *rp = rstd.mutable_data();
  {
    py::gil_scoped_release nogil;
    fastnorm::bn_forward_train<float>(xp, yp, A, C, B, g, b, *eps, mp, rp, num_threads);
  }
  const double count = static_cast<double>(A * B);
  for (idx c = 0; c < C; ++c) rp[c] = 1.0 / std::sqrt(rp[c] / count + *eps);  // rp held m2
  return py::make_tuple(y, mean, rstd);
}

// Its backward in training: (dx, dgamma, dbeta).
py::object batch_norm_backward_common(py::handle dy_, py::handle x_, py::handle mean_, py::handle rstd_,
                                      py::handle gamma_, py::handle axis, bool dx_only, int num_threads) {
  const auto x = plain<float>(x_), dy = plain<float>(dy_);
  idx A, C, B;
  if (!common_channels(x, axis, A, C, B) || !dy || shape_of(*dy) != shape_of(*x)) return py::none();
  const auto mean = common_stats(mean_, {C}), rstd = common_stats(rstd_, {C});
  std::vector<double> gw;
  const double* g;
  if (!mean || !rstd || !common_param(gamma_, C, gw, g)) return py::none();
  const bool param_grads = g != nullptr && !dx_only;
  std::vector<double> sum_dy(C), sum_dy_xmu(C);
  py::array dx = result<float>(shape_of(*x));
  const float *dyp = cptr<float>(*dy), *xp = cptr<float>(*x);
  const double *mp = cptr<double>(*mean), *rp = cptr<double>(*rstd);
  float* dxp = mptr<float>(dx);
  {
    py::gil_scoped_release nogil;
    fastnorm::bn_backward_train<float>(dyp, xp, dxp, A, C, B, mp, rp, g, nullptr, sum_dy.data(), sum_dy_xmu.data(),
                                       num_threads);
  }
  if (!param_grads) return py::make_tuple(dx, py::none(), py::none());
  for (idx c = 0; c < C; ++c) sum_dy_xmu[c] *= rp[c];
  return py::make_tuple(dx, narrowed(sum_dy_xmu, {C}), narrowed(sum_dy, {C}));
}

// x as group norm's (N, P, C, Q) with G groups: false unless x is a plain float32 array of rank >= 2, `axis` names
// one of its axes but the first (the batch axis), num_groups is an int dividing the channels and there is more than
// one channel (the general path sums one channel's parameter gradients in another order).
bool common_groups(const std::optional<py::array>& x, py::handle axis, py::handle num_groups,
                   fastnorm::GroupShape& s) {
  if (!x || x->ndim() < 2 || x->size() == 0 || !PyLong_CheckExact(num_groups.ptr())) return false;
  const auto ax = common_axis(axis, static_cast<int>(x->ndim()));
  int overflow = 0;
  const long G = PyLong_AsLongAndOverflow(num_groups.ptr(), &overflow);
  if (!ax || *ax == 0 || overflow) return false;
  s = {x->shape(0), 1, x->shape(*ax), 1, G};
  for (int i = 1; i < x->ndim(); ++i) (i < *ax ? s.P : s.Q) *= i == *ax ? 1 : x->shape(i);
  return s.C > 1 && G >= 1 && s.C % G == 0;
}

// Group norm: (y, mean, rstd), the statistics of shape (N, G).
py::object group_norm_common(py::handle x_, py::handle num_groups, py::handle gamma_, py::handle beta_,
                             py::handle axis, py::handle eps_, int num_threads) {
  const auto x = plain<float>(x_);
  fastnorm::GroupShape s;
  const auto eps = common_eps(eps_, false);
  if (!common_groups(x, axis, num_groups, s) || !eps) return py::none();
  std::vector<double> gw, bw;
  const double *g, *b;
  if (!common_param(gamma_, s.C, gw, g) || !common_param(beta_, s.C, bw, b)) return py::none();
  py::array y = result<float>(shape_of(*x));
  py::array_t<double> mean({s.N, s.G}), rstd({s.N, s.G});
  const float* xp = cptr<float>(*x);
  float* yp = mptr<float>(y);
  double *mp = mean.mutable_data(), *rp = rstd.mutable_data();
  {
    py::gil_scoped_release nogil;
    fastnorm::group_norm_forward<float>(xp, yp, s, *eps, g, b, mp, rp, num_threads);
  }
  return py::make_tuple(y, mean, rstd);
}

// Its backward: (dx, dgamma, dbeta); the parameter gradients are the per-sample sums added over the samples in
// order, as NumPy's sum over the first axis of (N, C) values does.
py::object group_norm_backward_common(py::handle dy_, py::handle x_, py::handle mean_, py::handle rstd_,
                                      py::handle num_groups, py::handle gamma_, py::handle axis, bool dx_only,
                                      int num_threads) {
  const auto x = plain<float>(x_), dy = plain<float>(dy_);
  fastnorm::GroupShape s;
  if (!common_groups(x, axis, num_groups, s) || !dy || shape_of(*dy) != shape_of(*x)) return py::none();
  const auto mean = common_stats(mean_, {s.N, s.G}), rstd = common_stats(rstd_, {s.N, s.G});
  std::vector<double> gw;
  const double* g;
  if (!mean || !rstd || !common_param(gamma_, s.C, gw, g)) return py::none();
  std::vector<double> sum_dy(s.N * s.C), sum_dy_xmu(s.N * s.C);
  py::array dx = result<float>(shape_of(*x));
  const float *dyp = cptr<float>(*dy), *xp = cptr<float>(*x);
  const double *mp = cptr<double>(*mean), *rp = cptr<double>(*rstd);
  float* dxp = mptr<float>(dx);
  {
    py::gil_scoped_release nogil;
    fastnorm::group_norm_backward<float>(dyp, xp, dxp, s, mp, rp, g, sum_dy.data(), sum_dy_xmu.data(), num_threads);
  }
  if (g == nullptr || dx_only) return py::make_tuple(dx, py::none(), py::none());
  std::vector<double> dgamma(s.C, 0.0), dbeta(s.C, 0.0), r(s.C);
  const idx per_group = s.C / s.G;
  for (idx n = 0; n < s.N; ++n) {
    for (idx g = 0; g < s.G; ++g)  // each channel's rstd, then one loop over the channels (it vectorises)
      std::fill(r.begin() + g * per_group, r.begin() + (g + 1) * per_group, rp[n * s.G + g]);
    const double *sd = sum_dy.data() + n * s.C, *sdx = sum_dy_xmu.data() + n * s.C;
    for (idx c = 0; c < s.C; ++c) {
      dgamma[c] += sdx[c] * r[c];
      dbeta[c] += sd[c];
    }
  }
  return py::make_tuple(dx, narrowed(dgamma, {s.C}), narrowed(dbeta, {s.C}));
}

}  // namespace

void add_common_calls(py::module_& m) {  // Python's fast paths: None means "take the general path"
  m.def("row_norm_common", &row_norm_common);
  m.def("row_norm_backward_common", &row_norm_backward_common);
  m.def("batch_norm_common", &batch_norm_common);
  m.def("batch_norm_backward_common", &batch_norm_backward_common);
  m.def("group_norm_common", &group_norm_common);
  m.def("group_norm_backward_common", &group_norm_backward_common);
}

}  // namespace fastnorm::py_arrays
