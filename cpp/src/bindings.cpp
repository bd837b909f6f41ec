// pybind11 bindings: strict checks on raw buffers, GIL released around every kernel, no maths.
// NumPy semantics (dtype resolution, out=, strides, 0-d arrays) live in python/fastnorm/_array.py; these functions
// accept only C-contiguous float32/float64 arrays of exactly matching dtype and size, and never convert.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "fastnorm/activations.h"
#include "fastnorm/batch_norm.h"
#include "fastnorm/buffers.h"
#include "fastnorm/copy.h"
#include "fastnorm/group_norm.h"
#include "fastnorm/isa.h"
#include "fastnorm/layer_norm.h"
#include "fastnorm/moments.h"
#include "fastnorm/parallel.h"
#include "fastnorm/random.h"
#include "fastnorm/softmax.h"
#include "py_arrays.h"

namespace py = pybind11;
using namespace pybind11::literals;
using fastnorm::idx;
using namespace fastnorm::py_arrays;

namespace fastnorm::py_arrays {

// An uninitialised C-ordered array whose memory comes from, and goes back to, the buffer cache (buffers.h).  Its
// base is a capsule named kBufferCapsule that owns the buffer and says whether it was reused from the cache.
constexpr const char* kBufferCapsule = "fastnorm.buffer";
struct OwnedBuffer {
  void* p;
  std::size_t capacity;
  bool reused;
};

py::array empty(const std::vector<py::ssize_t>& shape, const py::dtype& dtype) {
  std::size_t bytes = static_cast<std::size_t>(dtype.itemsize());
  for (py::ssize_t s : shape) {
    if (s < 0) throw py::value_error("shape: negative dimension");
    bytes *= static_cast<std::size_t>(s);
  }
  auto* owned = new OwnedBuffer{nullptr, 0, false};
  owned->p = fastnorm::buffers::acquire(bytes, &owned->capacity, &owned->reused);
  if (owned->p == nullptr) {
    delete owned;
    throw std::bad_alloc();
  }
  py::capsule base(owned, kBufferCapsule, [](PyObject* o) {
    auto* b = static_cast<OwnedBuffer*>(PyCapsule_GetPointer(o, kBufferCapsule));
    fastnorm::buffers::release(b->p, b->capacity);
    delete b;
  });
  return py::array(dtype, shape, owned->p, base);
}

// True for an array from empty() whose buffer came from the cache (its pages are mapped already).
bool buffer_reused(const py::array& a) {
  const py::object base = a.base();
  if (!PyCapsule_IsValid(base.ptr(), kBufferCapsule)) return false;
  return static_cast<OwnedBuffer*>(PyCapsule_GetPointer(base.ptr(), kBufferCapsule))->reused;
}

}  // namespace fastnorm::py_arrays

namespace {

enum class Dtype { f32, f64 };

Dtype dtype_of(const py::array& a, const char* name) {
  const py::dtype dt = a.dtype();
  if (is_dtype_of<float>(dt)) return Dtype::f32;
  if (is_dtype_of<double>(dt)) return Dtype::f64;
  throw py::type_error(std::string(name) + ": expected a float32 or float64 array, got " +
                       py::str(dt).cast<std::string>());
}

// The storage types of the kernels that read and write half types natively (activations, normalizations, moments):
// float16 where the build has _Float16, and ml_dtypes' bfloat16 (a user dtype of kind 'V', its 2 bytes the high
// half of a float32), both computed in float; float32 and float64 as they are.
enum class Storage { f16, bf16, f32, f64 };

Storage storage_of(const py::array& a, const char* name) {
  const py::dtype d = a.dtype();
#if FASTNORM_HAVE_HALF
  if (d.kind() == 'f' && d.itemsize() == 2 && (d.byteorder() == '=' || d.byteorder() == '|'))
    return Storage::f16;
#endif
  if (d.kind() == 'V' && d.itemsize() == 2 && py::str(d.attr("name")).cast<std::string>() == "bfloat16")
    return Storage::bf16;
  return dtype_of(a, name) == Dtype::f32 ? Storage::f32 : Storage::f64;
}

// The element type of `a` as a kernel family reads it: Storage (half types too) or Dtype (float32 / float64).
template <class Kind>
Kind kind_of(const py::array& a, const char* name) {
  if constexpr (std::is_same_v<Kind, Storage>)
    return storage_of(a, name);
  else
    return dtype_of(a, name);
}

// Calls f(T{}) with T the C++ type of `kind`.
template <class F>
void with_type(Dtype kind, F&& f) {
  if (kind == Dtype::f32)
    f(float{});
  else
    f(double{});
}
template <class F>
void with_type(Storage kind, F&& f) {
#if FASTNORM_HAVE_HALF
  if (kind == Storage::f16) return f(fastnorm::half{});
#endif
  if (kind == Storage::bf16) return f(fastnorm::bf16{});
  with_type(kind == Storage::f32 ? Dtype::f32 : Dtype::f64, f);
}

void check_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": expected a C-contiguous array");
  // the kernels load and store whole items: an item at an odd address would be undefined behaviour
  if (reinterpret_cast<std::uintptr_t>(a.data()) % static_cast<std::uintptr_t>(a.itemsize()) != 0)
    throw py::value_error(std::string(name) + ": expected an array aligned to its item size");
}

void check_writeable(const py::array& a, const char* name) {
  if (!a.writeable()) throw py::value_error(std::string(name) + ": array is read-only");
}

// Checks `a` against an element type and size: those of the first array of a call.
template <class Kind>
void check_like(const py::array& a, const char* name, Kind kind, idx size) {
  if (kind_of<Kind>(a, name) != kind) throw py::type_error(std::string(name) + ": dtype differs from the input's");
  check_contiguous(a, name);
  if (static_cast<idx>(a.size()) != size)
    throw py::value_error(std::string(name) + ": expected " + std::to_string(size) + " elements, got " +
                          std::to_string(a.size()));
}

// The arrays of a kernel call, each checked where it is named: the first fixes the element type (Kind: Storage for
// the kernels that read half types natively, Dtype for float32 / float64 ones) and the size that every array named
// by like() and output() must share; output() also wants it writeable.  run(f) calls f(T{}), T that type's C++
// type, with the GIL released: f takes the arrays' data with cptr / mptr (reading an array's fields needs no GIL).
template <class Kind>
class Arrays {
 public:
  Arrays(const py::array& first, const char* name) : kind_(kind_of<Kind>(first, name)), size_(first.size()) {
    check_contiguous(first, name);
  }
  const Arrays& like(const py::array& a, const char* name) const {
    check_like(a, name, kind_, size_);
    return *this;
  }
  const Arrays& output(const py::array& a, const char* name, idx size = -1) const {
    check_like(a, name, kind_, size < 0 ? size_ : size);
    check_writeable(a, name);
    return *this;
  }
  Kind kind() const { return kind_; }
  template <class F>
  void run(F&& f) const {
    py::gil_scoped_release nogil;
    with_type(kind_, f);
  }

 private:
  Kind kind_;
  idx size_;
};

fastnorm::Activation activation_of(int id) {
  if (id < 0 || id >= static_cast<int>(fastnorm::Activation::count))
    throw py::value_error("unknown activation id " + std::to_string(id));
  return static_cast<fastnorm::Activation>(id);
}

void activation_forward(int op, const py::array& x, py::array& out, double a, double b, int num_threads,
                        bool fresh_output) {
  const Arrays<Storage> call(x, "x");
  call.output(out, "out");
  const fastnorm::Activation act = activation_of(op);
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::activation_forward<T>(act, cptr<T>(x), mptr<T>(out), x.size(), {a, b}, num_threads, fresh_output);
  });
}

void activation_backward(int op, const py::array& dy, const py::array& xy, py::array& out, double a, double b,
                         bool from_output, int num_threads, bool fresh_output) {
  const Arrays<Storage> call(dy, "dy");
  call.like(xy, from_output ? "y" : "x").output(out, "out");
  const fastnorm::Activation act = activation_of(op);
  if (from_output && !fastnorm::activation_has_output_backward(act))
    throw py::value_error(std::string(fastnorm::activation_names()[op]) + " has no backward from its output y");
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::activation_backward<T>(act, cptr<T>(dy), cptr<T>(xy), mptr<T>(out), dy.size(), {a, b}, from_output,
                                      num_threads, fresh_output);
  });
}

// x of a per-channel kernel viewed as (A, C, B) (or (outer, channels, inner), (M, D) rows as (M, D, 1)).
void check_layout(const py::array& x, const char* name, idx A, idx C, idx B, const char* what = "(A, C, B)") {
  if (A < 0 || C < 0 || B < 0 || A * C * B != static_cast<idx>(x.size()))
    throw py::value_error(std::string(name) + ": " + what + " does not match the array's size");
}

void prelu_forward(const py::array& x, const py::array& alpha, py::array& out, idx outer, idx channels, idx inner,
                   int num_threads) {
  const Arrays<Dtype> call(x, "x");
  check_layout(x, "x", outer, channels, inner, "(outer, channels, inner)");
  check_like(alpha, "alpha", call.kind(), channels);
  call.output(out, "out");
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::prelu_forward<T>(cptr<T>(x), cptr<T>(alpha), mptr<T>(out), outer, channels, inner, num_threads);
  });
}

void prelu_backward(const py::array& dy, const py::array& x, const py::array& alpha, py::array& dx,
                    py::array& dalpha, idx outer, idx channels, idx inner, int num_threads) {
  const Arrays<Dtype> call(dy, "dy");
  check_layout(dy, "x", outer, channels, inner, "(outer, channels, inner)");
  call.like(x, "x");
  check_like(alpha, "alpha", call.kind(), channels);
  call.output(dx, "dx");
  check_like(dalpha, "dalpha", Dtype::f64, channels);
  check_writeable(dalpha, "dalpha");
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::prelu_backward<T>(cptr<T>(dy), cptr<T>(x), cptr<T>(alpha), mptr<T>(dx), mptr<double>(dalpha), outer,
                                channels, inner, num_threads);
  });
}

void check_maxout(const py::array& x, idx outer, idx groups, idx pieces, idx inner) {
  if (outer < 0 || groups < 0 || pieces < 1 || inner < 0 ||
      outer * groups * pieces * inner != static_cast<idx>(x.size()))
    throw py::value_error("x: (outer, groups, pieces, inner) does not match the array's size");
}

void maxout_forward(const py::array& x, py::array& out, idx outer, idx groups, idx pieces, idx inner,
                    int num_threads) {
  const Arrays<Dtype> call(x, "x");
  check_maxout(x, outer, groups, pieces, inner);
  call.output(out, "out", outer * groups * inner);
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::maxout_forward<T>(cptr<T>(x), mptr<T>(out), outer, groups, pieces, inner, num_threads);
  });
}

void maxout_backward(const py::array& dy, const py::array& x, py::array& out, idx outer, idx groups, idx pieces,
                     idx inner, int num_threads) {
  const Arrays<Dtype> call(x, "x");
  check_maxout(x, outer, groups, pieces, inner);
  check_like(dy, "dy", call.kind(), outer * groups * inner);
  call.output(out, "out");
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::maxout_backward<T>(cptr<T>(dy), cptr<T>(x), mptr<T>(out), outer, groups, pieces, inner, num_threads);
  });
}

// Fills out (contiguous float32/float64) from the generator state (key, counter); returns the counter after it.
// fresh_output: out was just allocated (never streamed into: its pages are not mapped yet, see activations.h).
std::uint64_t sample(const std::string& distribution_name, std::uint64_t key, std::uint64_t counter, py::array& out,
                     const fastnorm::SampleParams& p, int num_threads, bool fresh_output) {
  const auto distribution =
      fastnorm::enum_from_name<fastnorm::Distribution>(fastnorm::distribution_names(), distribution_name,
                                                       "distribution");
  const Arrays<Dtype> call(out, "out");
  check_writeable(out, "out");
  const idx n = static_cast<idx>(out.size());
  std::uint64_t next = 0;
  call.run([&](auto t) {
    using T = decltype(t);
    next = counter + static_cast<std::uint64_t>(fastnorm::chunks_for<T>(n)) *
                         static_cast<std::uint64_t>(fastnorm::chunk_blocks<T>());
    const bool stream = !fresh_output && fastnorm::stream_output(n * static_cast<idx>(sizeof(T)), 1);
    fastnorm::sample<T>(distribution, key, counter, mptr<T>(out), n, p, num_threads, stream);
  });
  return next;
}

// Returns the counter after the call.
std::uint64_t dropout(std::uint64_t key, std::uint64_t counter, const py::array& x, py::array& out,
                      std::uint32_t threshold, double scale, double shift, double drop_shift, int num_threads,
                      bool fresh_output) {
  const Arrays<Dtype> call(x, "x");
  call.output(out, "out");
  if (threshold > (1u << 16)) throw py::value_error("threshold: expected at most 2**16");
  const idx n = static_cast<idx>(x.size());
  call.run([&](auto t) {
    using T = decltype(t);
    const bool stream = !fresh_output && fastnorm::stream_output(n * static_cast<idx>(sizeof(T)), 2);
    fastnorm::dropout<T>(key, counter, cptr<T>(x), mptr<T>(out), n, threshold, static_cast<T>(scale),
                         static_cast<T>(shift), static_cast<T>(drop_shift), num_threads, stream);
  });
  return counter + static_cast<std::uint64_t>(fastnorm::dropout_chunks(n)) *
                       static_cast<std::uint64_t>(fastnorm::kDropoutBlocks);
}

void copy(const py::array& src, py::array& dst, int num_threads) {
  check_contiguous(src, "src");
  check_contiguous(dst, "dst");
  check_writeable(dst, "dst");
  if (src.nbytes() != dst.nbytes()) throw py::value_error("dst: size differs from src");
  const void* s = src.data();
  void* d = dst.mutable_data();
  const idx nbytes = src.nbytes();
  py::gil_scoped_release nogil;
  fastnorm::copy_bytes(s, d, nbytes, num_threads);
}

// Per-channel float64 values (statistics, constants, parameters): C of them.
const double* channel_values(const py::array& a, const char* name, idx C) {
  check_like(a, name, Dtype::f64, C);
  return cptr<double>(a);
}

// A float64 output of n values, checked (contiguous, writeable): its data.
double* f64_output(py::array& a, const char* name, idx n) {
  check_like(a, name, Dtype::f64, n);
  check_writeable(a, name);
  return mptr<double>(a);
}

void channel_moments(const py::array& x, idx A, idx C, idx B, py::array& mean, py::array& m2, int num_threads) {
  const Arrays<Storage> call(x, "x");
  check_layout(x, "x", A, C, B);
  double* mp = f64_output(mean, "mean", C);
  double* m2p = f64_output(m2, "m2", C);
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::channel_moments<T>(cptr<T>(x), A, C, B, mp, m2p, num_threads);
  });
}

// x of a per-channel kernel (any Storage, viewed as (A, C, B)): the call's arrays, checked from x.
Arrays<Storage> channel_input(const py::array& x, idx A, idx C, idx B) {
  Arrays<Storage> call(x, "x");
  check_layout(x, "x", A, C, B);
  return call;
}

// The activation fused after a normalization, by its name (post_op_names(): "none", "relu", ...), and leaky_relu's
// slope.
fastnorm::PostOp post_op(const std::string& kind, double slope) { return fastnorm::post_op_named(kind, slope); }

// Optional per-channel float64 parameters: None gives a null pointer (gamma 1, beta 0).
const double* optional_values(const py::object& a, const char* name, idx C) {
  if (a.is_none()) return nullptr;
  return channel_values(a.cast<py::array>(), name, C);
}

// A backward's post-op and the forward's per-channel scale and shift, from which the post-op's input is
// recomputed (null without a post-op).
struct PostOpInput {
  fastnorm::PostOp op;
  const double* scale;
  const double* shift;
};

PostOpInput post_op_input(const std::string& post, double slope, const py::object& scale, const py::object& shift,
                          idx C) {
  const fastnorm::PostOp op = post_op(post, slope);
  if (!op.active()) return {op, nullptr, nullptr};
  const double* zs = optional_values(scale, "scale", C);
  const double* zb = optional_values(shift, "shift", C);
  if (!zs || !zb) throw py::value_error("scale: a post-op needs the forward's scale and shift");
  return {op, zs, zb};
}

void bn_apply(const py::array& x, py::array& out, idx A, idx C, idx B, const py::array& mean,
              const py::array& scale, const py::array& shift, int num_threads, const std::string& post, double slope) {
  const fastnorm::PostOp op = post_op(post, slope);
  const auto call = channel_input(x, A, C, B);
  call.output(out, "out");
  const double* m = channel_values(mean, "mean", C);
  const double* sc = channel_values(scale, "scale", C);
  const double* sh = channel_values(shift, "shift", C);
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::bn_apply<T>(cptr<T>(x), mptr<T>(out), A, C, B, m, sc, sh, num_threads, op);
  });
}

// With a post-op, scale and shift (the forward's) give z; they are ignored otherwise.
void bn_grad_sums(const py::array& dy, const py::array& x, idx A, idx C, idx B, const py::array& mean,
                  py::array& sum_dy, py::array& sum_dy_xmu, int num_threads, const std::string& post, double slope,
                  const py::object& scale, const py::object& shift) {
  const PostOpInput z = post_op_input(post, slope, scale, shift, C);
  const auto call = channel_input(x, A, C, B);
  call.like(dy, "dy");
  const double* m = channel_values(mean, "mean", C);
  double* s1 = f64_output(sum_dy, "sum_dy", C);
  double* s2 = f64_output(sum_dy_xmu, "sum_dy_xmu", C);
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::bn_grad_sums<T>(cptr<T>(dy), cptr<T>(x), A, C, B, m, s1, s2, num_threads, z.op, z.scale, z.shift);
  });
}

// The whole training forward / backward (batch_norm.h), by bn_schedule(): whether the output was written.
bool bn_forward_train(const py::array& x, py::array& out, idx A, idx C, idx B, const py::object& gamma,
                      const py::object& beta, double eps, py::array& mean, py::array& m2, int num_threads,
                      const std::string& post, double slope) {
  const fastnorm::PostOp op = post_op(post, slope);
  const auto call = channel_input(x, A, C, B);
  call.output(out, "out");
  const double* g = optional_values(gamma, "gamma", C);
  const double* b = optional_values(beta, "beta", C);
  double* mp = f64_output(mean, "mean", C);
  double* m2p = f64_output(m2, "m2", C);
  bool done = false;
  call.run([&](auto t) {
    using T = decltype(t);
    done = fastnorm::bn_forward_train<T>(cptr<T>(x), mptr<T>(out), A, C, B, g, b, eps, mp, m2p, num_threads, op);
  });
  return done;
}

bool bn_backward_train(const py::array& dy, const py::array& x, py::array& dx, idx A, idx C, idx B,
                       const py::array& mean, const py::array& rstd, const py::object& gamma, const py::object& beta,
                       py::array& sum_dy, py::array& sum_dy_xmu, int num_threads, const std::string& post,
                       double slope) {
  const fastnorm::PostOp op = post_op(post, slope);
  const auto call = channel_input(x, A, C, B);
  call.like(dy, "dy").output(dx, "dx");
  const double* m = channel_values(mean, "mean", C);
  const double* r = channel_values(rstd, "rstd", C);
  const double* g = optional_values(gamma, "gamma", C);
  const double* b = optional_values(beta, "beta", C);
  double* s1 = f64_output(sum_dy, "sum_dy", C);
  double* s2 = f64_output(sum_dy_xmu, "sum_dy_xmu", C);
  bool done = false;
  call.run([&](auto t) {
    using T = decltype(t);
    done = fastnorm::bn_backward_train<T>(cptr<T>(dy), cptr<T>(x), mptr<T>(dx), A, C, B, m, r, g, b, s1, s2,
                                          num_threads, op);
  });
  return done;
}

void bn_input_grad(const py::array& dy, const py::array& x, py::array& dx, idx A, idx C, idx B,
                   const py::array& mean, const py::array& k_dy, const py::array& k_xmu, const py::array& k_one,
                   int num_threads, const std::string& post, double slope, const py::object& scale,
                   const py::object& shift) {
  const PostOpInput z = post_op_input(post, slope, scale, shift, C);
  const auto call = channel_input(x, A, C, B);
  call.like(dy, "dy").output(dx, "dx");
  const double* m = channel_values(mean, "mean", C);
  const double* a = channel_values(k_dy, "k_dy", C);
  const double* b = channel_values(k_xmu, "k_xmu", C);
  const double* c = channel_values(k_one, "k_one", C);
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::bn_input_grad<T>(cptr<T>(dy), cptr<T>(x), mptr<T>(dx), A, C, B, m, a, b, c, num_threads, z.op,
                               z.scale, z.shift);
  });
}

// x laid out as N samples of P rows of C channels of Q values, G groups: the call's arrays, checked from x.
Arrays<Storage> group_input(const py::array& x, idx N, idx P, idx C, idx Q, idx G) {
  if (N < 0 || P < 0 || C < 0 || Q < 0 || G < 1 || C % G != 0) throw py::value_error("bad group layout");
  return channel_input(x, N * P, C, Q);
}

void group_norm_forward(const py::array& x, py::array& out, idx N, idx P, idx C, idx Q, idx G, double eps,
                        const py::object& gamma, const py::object& beta, py::array& mean, py::array& rstd,
                        int num_threads, const std::string& post, double slope) {
  const fastnorm::PostOp op = post_op(post, slope);
  const auto call = group_input(x, N, P, C, Q, G);
  call.output(out, "out");
  const double* g = optional_values(gamma, "gamma", C);
  const double* b = optional_values(beta, "beta", C);
  double* mp = f64_output(mean, "mean", N * G);
  double* rp = f64_output(rstd, "rstd", N * G);
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::group_norm_forward<T>(cptr<T>(x), mptr<T>(out), {N, P, C, Q, G}, eps, g, b, mp, rp, num_threads, op);
  });
}

void group_norm_backward(const py::array& dy, const py::array& x, py::array& dx, idx N, idx P, idx C, idx Q, idx G,
                         const py::array& mean, const py::array& rstd, const py::object& gamma, py::array& sum_dy,
                         py::array& sum_dy_xmu, int num_threads, const std::string& post, double slope,
                         const py::object& beta) {
  const fastnorm::PostOp op = post_op(post, slope);
  const auto call = group_input(x, N, P, C, Q, G);
  call.output(dx, "dx").like(dy, "dy");
  const double* m = channel_values(mean, "mean", N * G);
  const double* r = channel_values(rstd, "rstd", N * G);
  const double* g = optional_values(gamma, "gamma", C);
  const double* b = optional_values(beta, "beta", C);
  double* s1 = f64_output(sum_dy, "sum_dy", N * C);
  double* s2 = f64_output(sum_dy_xmu, "sum_dy_xmu", N * C);
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::group_norm_backward<T>(cptr<T>(dy), cptr<T>(x), mptr<T>(dx), {N, P, C, Q, G}, m, r, g, s1, s2,
                                     num_threads, op, b);
  });
}

void softmax_forward(const py::array& x, py::array& out, idx A, idx C, idx B, bool log, int num_threads) {
  const Arrays<Dtype> call(x, "x");
  check_layout(x, "x", A, C, B);
  call.output(out, "out");
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::softmax_forward<T>(cptr<T>(x), mptr<T>(out), A, C, B, log, num_threads);
  });
}

void softmax_backward(const py::array& dy, const py::array& y, py::array& dx, idx A, idx C, idx B, bool log,
                      int num_threads) {
  const Arrays<Dtype> call(y, "y");
  check_layout(y, "y", A, C, B);
  call.like(dy, "dy").output(dx, "dx");
  call.run([&](auto t) {
    using T = decltype(t);
    fastnorm::softmax_backward<T>(cptr<T>(dy), cptr<T>(y), mptr<T>(dx), A, C, B, log, num_threads);
  });
}

// Class indices: int64, one per row, checked against [0, C) here (ignore_index aside) so that no row reads past
// its logits.
const std::int64_t* class_targets(const py::array& target, idx N, idx C, std::int64_t ignore_index) {
  if (!(target.dtype().kind() == 'i' && target.itemsize() == 8)) throw py::type_error("target: expected int64");
  check_contiguous(target, "target");
  if (static_cast<idx>(target.size()) != N) throw py::value_error("target: expected one class index per row");
  const auto* t = static_cast<const std::int64_t*>(target.data());
  for (idx i = 0; i < N; ++i)
    if (t[i] != ignore_index && (t[i] < 0 || t[i] >= C))
      throw py::value_error("target: class index " + std::to_string(t[i]) + " out of range [0, " +
                            std::to_string(C) + ")");
  return t;
}

// What every cross-entropy binding checks first: logits rows (N, C), the class indices (in range or ignore_index)
// and the optional class weights.
struct CrossEntropyInputs {
  Arrays<Dtype> call;
  const std::int64_t* t;
  const double* w;
};

CrossEntropyInputs cross_entropy_inputs(const py::array& x, const py::array& target, idx N, idx C,
                                        const py::object& weight, std::int64_t ignore_index) {
  const Arrays<Dtype> call(x, "x");
  check_layout(x, "x", N, C, 1);
  const std::int64_t* t = class_targets(target, N, C, ignore_index);
  const double* w = weight.is_none() ? nullptr : channel_values(weight.cast<py::array>(), "weight", C);
  return {call, t, w};
}

void cross_entropy_forward(const py::array& x, const py::array& target, idx N, idx C, double eps,
                           const py::object& weight, std::int64_t ignore_index, py::array& loss, py::array& lse,
                           int num_threads) {
  const CrossEntropyInputs in = cross_entropy_inputs(x, target, N, C, weight, ignore_index);
  double* lp = f64_output(loss, "loss", N);
  double* sp = f64_output(lse, "lse", N);
  in.call.run([&](auto tag) {
    using T = decltype(tag);
    fastnorm::cross_entropy_forward<T>(cptr<T>(x), in.t, N, C, eps, in.w, ignore_index, lp, sp, num_threads);
  });
}

void cross_entropy_backward(const py::array& x, const py::array& target, const py::array& lse, const py::array& g,
                            py::array& dx, idx N, idx C, double eps, const py::object& weight,
                            std::int64_t ignore_index, int num_threads) {
  const CrossEntropyInputs in = cross_entropy_inputs(x, target, N, C, weight, ignore_index);
  in.call.output(dx, "dx");
  const double* sp = channel_values(lse, "lse", N);
  const double* gp = channel_values(g, "g", N);
  in.call.run([&](auto tag) {
    using T = decltype(tag);
    fastnorm::cross_entropy_backward<T>(cptr<T>(x), in.t, sp, gp, mptr<T>(dx), N, C, eps, in.w, ignore_index,
                                        num_threads);
  });
}

void cross_entropy_with_grad(const py::array& x, const py::array& target, const py::array& g, py::array& dx, idx N,
                             idx C, double eps, const py::object& weight, std::int64_t ignore_index, py::array& loss,
                             int num_threads) {
  const CrossEntropyInputs in = cross_entropy_inputs(x, target, N, C, weight, ignore_index);
  in.call.output(dx, "dx");
  const double* gp = channel_values(g, "g", N);
  double* lp = f64_output(loss, "loss", N);
  in.call.run([&](auto tag) {
    using T = decltype(tag);
    fastnorm::cross_entropy_with_grad<T>(cptr<T>(x), in.t, gp, mptr<T>(dx), N, C, eps, in.w, ignore_index, lp,
                                         num_threads);
  });
}

// Layer and RMS norm store x, dy, y and dx in any Storage; gamma and beta are in the type computed in (float for
// the half types).
Dtype compute_of(Storage storage) { return storage == Storage::f64 ? Dtype::f64 : Dtype::f32; }

// An optional array argument: None, or an array checked like the call's others (dtype and size).
std::optional<py::array> optional_like(const py::object& a, const char* name, Dtype dtype, idx size) {
  if (a.is_none()) return std::nullopt;
  py::array arr = a.cast<py::array>();
  check_like(arr, name, dtype, size);
  return arr;
}

// x of layer / RMS norm, M rows of D values: the call's arrays, checked from x.
Arrays<Storage> row_input(const py::array& x, idx M, idx D) {
  Arrays<Storage> call(x, "x");
  check_layout(x, "x", M, D, 1, "(M, D)");
  return call;
}

void ln_forward(const py::array& x, py::array& out, idx M, idx D, double eps, bool centered, const py::object& gamma,
                const py::object& beta, py::array& mean, py::array& rstd, int num_threads, const std::string& post,
                double slope) {
  const fastnorm::PostOp op = post_op(post, slope);
  const auto call = row_input(x, M, D);
  call.output(out, "out");
  const auto g = optional_like(gamma, "gamma", compute_of(call.kind()), D);
  const auto b = optional_like(beta, "beta", compute_of(call.kind()), D);
  double* mp = f64_output(mean, "mean", M);
  double* rp = f64_output(rstd, "rstd", M);
  call.run([&](auto t) {
    using T = decltype(t);
    using C = fastnorm::compute_t<T>;
    fastnorm::ln_forward<T>(cptr<T>(x), mptr<T>(out), M, D, eps, centered, cptr_or_null<C>(g), cptr_or_null<C>(b),
                            mp, rp, num_threads, op);
  });
}

void ln_backward(const py::array& dy, const py::array& x, py::array& dx, idx M, idx D, const py::array& mean,
                 const py::array& rstd, const py::object& gamma, bool centered, const py::object& dgamma,
                 const py::object& dbeta, int num_threads, const std::string& post, double slope,
                 const py::object& beta) {
  const fastnorm::PostOp op = post_op(post, slope);
  const auto call = row_input(x, M, D);
  call.like(dy, "dy").output(dx, "dx");
  const double* m = channel_values(mean, "mean", M);
  const double* r = channel_values(rstd, "rstd", M);
  const auto g = optional_like(gamma, "gamma", compute_of(call.kind()), D);
  const auto b = optional_like(beta, "beta", compute_of(call.kind()), D);
  // the parameter gradients, when asked for (None: not computed, no partial sums kept)
  py::array dg = dgamma.is_none() ? py::array() : dgamma.cast<py::array>();
  py::array db = dbeta.is_none() ? py::array() : dbeta.cast<py::array>();
  double* dgp = dgamma.is_none() ? nullptr : f64_output(dg, "dgamma", D);
  double* dbp = dbeta.is_none() ? nullptr : f64_output(db, "dbeta", D);
  call.run([&](auto t) {
    using T = decltype(t);
    using C = fastnorm::compute_t<T>;
    fastnorm::ln_backward<T>(cptr<T>(dy), cptr<T>(x), mptr<T>(dx), M, D, m, r, cptr_or_null<C>(g), centered, dgp,
                             dbp, num_threads, op, cptr_or_null<C>(b));
  });
}

py::dict build_info() {
  py::dict info;
  info["version"] = FASTNORM_VERSION;
  info["compiler"] = FASTNORM_CXX_COMPILER;
  info["flags"] = FASTNORM_COMPILE_FLAGS;
  info["openmp"] = fastnorm::have_openmp();
#ifdef _OPENMP
  info["openmp_version"] = _OPENMP;
#else
  info["openmp_version"] = py::none();
#endif
  info["multi_isa"] = static_cast<bool>(FASTNORM_MULTI_ISA);
  return info;
}

py::dict buffer_cache_info() {
  const fastnorm::buffers::Info i = fastnorm::buffers::info();
  py::dict d;
  d["limit"] = i.limit;
  d["cached_bytes"] = i.cached_bytes;
  d["cached_buffers"] = i.cached_buffers;
  d["hits"] = i.hits;
  d["misses"] = i.misses;
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastnorm's compiled kernels: strict, contiguous, exact-dtype; use the fastnorm package instead";

  m.def("build_info", &build_info);
  m.attr("native_float16") = py::bool_(FASTNORM_HAVE_HALF != 0);
  m.attr("native_bfloat16") = py::bool_(true);
  m.def("isa", [] { return std::string(fastnorm::isa_name(fastnorm::active_isa())); },
        "The ISA level kernels run at (first call applies FASTNORM_ISA and may raise ValueError).");
  m.def("set_isa", [](const std::string& name) { fastnorm::set_isa(fastnorm::parse_isa(name)); }, "name"_a);
  m.def("supported_isas", [] {
    std::vector<std::string> out;
    for (auto isa : {fastnorm::Isa::baseline, fastnorm::Isa::v3, fastnorm::Isa::v4})
      if (fastnorm::isa_supported(isa)) out.emplace_back(fastnorm::isa_name(isa));
    return out;
  });
  m.def("stream_threshold", &fastnorm::stream_threshold,
        "output size in bytes from which kernels use streaming (non-temporal) stores; negative: never");
  m.def("set_stream_threshold", &fastnorm::set_stream_threshold, "nbytes"_a);
  m.def("bn_schedule",
        [] { return std::string(fastnorm::bn_schedule_names()[static_cast<size_t>(fastnorm::bn_schedule())]); },
        "the batch-norm training calls' schedule (batch_norm.h): fastest, by_channel or two_pass");
  m.def("set_bn_schedule", [](const std::string& name) {
    fastnorm::set_bn_schedule(
        fastnorm::enum_from_name<fastnorm::BnSchedule>(fastnorm::bn_schedule_names(), name, "schedule"));
  }, "name"_a);
  m.def("max_threads", &fastnorm::max_threads, "omp_get_max_threads() of the calling thread (1 without OpenMP)");
  m.def("thread_limit", &fastnorm::thread_limit, "The most threads any call starts (4 per CPU, at least 64)");
  // The names of each enum's values, from its table (enum_table.h): what Python passes for them.
  const auto names = [](const std::vector<const char*>& of) { return std::vector<std::string>(of.begin(), of.end()); };
  m.def("activation_names", [names] { return names(fastnorm::activation_names()); });
  m.def("post_op_names", [names] { return names(fastnorm::post_op_names()); });
  m.def("distribution_names", [names] { return names(fastnorm::distribution_names()); });

  m.def("activation_forward", &activation_forward, "op"_a, "x"_a.noconvert(), "out"_a.noconvert(), "a"_a, "b"_a,
        "num_threads"_a, "fresh_output"_a = false);
  m.def("activation_backward", &activation_backward, "op"_a, "dy"_a.noconvert(), "xy"_a.noconvert(),
        "out"_a.noconvert(), "a"_a, "b"_a, "from_output"_a, "num_threads"_a, "fresh_output"_a = false);
  m.def("prelu_forward", &prelu_forward, "x"_a.noconvert(), "alpha"_a.noconvert(), "out"_a.noconvert(), "outer"_a,
        "channels"_a, "inner"_a, "num_threads"_a);
  m.def("prelu_backward", &prelu_backward, "dy"_a.noconvert(), "x"_a.noconvert(), "alpha"_a.noconvert(),
        "dx"_a.noconvert(), "dalpha"_a.noconvert(), "outer"_a, "channels"_a, "inner"_a, "num_threads"_a);
  m.def("maxout_forward", &maxout_forward, "x"_a.noconvert(), "out"_a.noconvert(), "outer"_a, "groups"_a,
        "pieces"_a, "inner"_a, "num_threads"_a);
  m.def("maxout_backward", &maxout_backward, "dy"_a.noconvert(), "x"_a.noconvert(), "out"_a.noconvert(),
        "outer"_a, "groups"_a, "pieces"_a, "inner"_a, "num_threads"_a);
  m.def("channel_moments", &channel_moments, "x"_a.noconvert(), "A"_a, "C"_a, "B"_a, "mean"_a.noconvert(),
        "m2"_a.noconvert(), "num_threads"_a);
  m.def("bn_forward_train", &bn_forward_train, "x"_a.noconvert(), "out"_a.noconvert(), "A"_a, "C"_a, "B"_a,
        "gamma"_a, "beta"_a, "eps"_a, "mean"_a.noconvert(), "m2"_a.noconvert(), "num_threads"_a, "post"_a = "none",
        "slope"_a = 0.01);
  m.def("bn_backward_train", &bn_backward_train, "dy"_a.noconvert(), "x"_a.noconvert(), "dx"_a.noconvert(),
        "A"_a, "C"_a, "B"_a, "mean"_a.noconvert(), "rstd"_a.noconvert(), "gamma"_a, "beta"_a,
        "sum_dy"_a.noconvert(), "sum_dy_xmu"_a.noconvert(), "num_threads"_a, "post"_a = "none", "slope"_a = 0.01);
  m.def("bn_apply", &bn_apply, "x"_a.noconvert(), "out"_a.noconvert(), "A"_a, "C"_a, "B"_a,
        "mean"_a.noconvert(), "scale"_a.noconvert(), "shift"_a.noconvert(), "num_threads"_a, "post"_a = "none",
        "slope"_a = 0.01);
  m.def("bn_grad_sums", &bn_grad_sums, "dy"_a.noconvert(), "x"_a.noconvert(), "A"_a, "C"_a, "B"_a,
        "mean"_a.noconvert(), "sum_dy"_a.noconvert(), "sum_dy_xmu"_a.noconvert(), "num_threads"_a, "post"_a = "none",
        "slope"_a = 0.01, "scale"_a = py::none(), "shift"_a = py::none());
  m.def("bn_input_grad", &bn_input_grad, "dy"_a.noconvert(), "x"_a.noconvert(), "dx"_a.noconvert(), "A"_a,
        "C"_a, "B"_a, "mean"_a.noconvert(), "k_dy"_a.noconvert(), "k_xmu"_a.noconvert(), "k_one"_a.noconvert(),
        "num_threads"_a, "post"_a = "none", "slope"_a = 0.01, "scale"_a = py::none(), "shift"_a = py::none());
  m.def("group_norm_forward", &group_norm_forward, "x"_a.noconvert(), "out"_a.noconvert(), "N"_a, "P"_a, "C"_a,
        "Q"_a, "G"_a, "eps"_a, "gamma"_a, "beta"_a, "mean"_a.noconvert(), "rstd"_a.noconvert(), "num_threads"_a,
        "post"_a = "none", "slope"_a = 0.01);
  m.def("group_norm_backward", &group_norm_backward, "dy"_a.noconvert(), "x"_a.noconvert(), "dx"_a.noconvert(),
        "N"_a, "P"_a, "C"_a, "Q"_a, "G"_a, "mean"_a.noconvert(), "rstd"_a.noconvert(), "gamma"_a,
        "sum_dy"_a.noconvert(), "sum_dy_xmu"_a.noconvert(), "num_threads"_a, "post"_a = "none", "slope"_a = 0.01,
        "beta"_a = py::none());
  m.def("dropout", &dropout, "key"_a, "counter"_a, "x"_a.noconvert(), "out"_a.noconvert(), "threshold"_a, "scale"_a,
        "shift"_a, "drop_shift"_a, "num_threads"_a, "fresh_output"_a = false);
  m.def("dropout_blocks", [](idx n) { return fastnorm::dropout_chunks(n) * fastnorm::kDropoutBlocks; });
  m.def("softmax_forward", &softmax_forward, "x"_a.noconvert(), "out"_a.noconvert(), "A"_a, "C"_a, "B"_a, "log"_a,
        "num_threads"_a);
  m.def("softmax_backward", &softmax_backward, "dy"_a.noconvert(), "y"_a.noconvert(), "dx"_a.noconvert(), "A"_a,
        "C"_a, "B"_a, "log"_a, "num_threads"_a);
  m.def("cross_entropy_forward", &cross_entropy_forward, "x"_a.noconvert(), "target"_a.noconvert(), "N"_a, "C"_a,
        "eps"_a, "weight"_a.none(true), "ignore_index"_a, "loss"_a.noconvert(), "lse"_a.noconvert(),
        "num_threads"_a);
  m.def("cross_entropy_backward", &cross_entropy_backward, "x"_a.noconvert(), "target"_a.noconvert(),
        "lse"_a.noconvert(), "g"_a.noconvert(), "dx"_a.noconvert(), "N"_a, "C"_a, "eps"_a, "weight"_a.none(true),
        "ignore_index"_a, "num_threads"_a);
  m.def("cross_entropy_with_grad", &cross_entropy_with_grad, "x"_a.noconvert(), "target"_a.noconvert(),
        "g"_a.noconvert(), "dx"_a.noconvert(), "N"_a, "C"_a, "eps"_a, "weight"_a.none(true), "ignore_index"_a,
        "loss"_a.noconvert(), "num_threads"_a);
  m.def("ln_forward", &ln_forward, "x"_a.noconvert(), "out"_a.noconvert(), "M"_a, "D"_a, "eps"_a, "centered"_a,
        "gamma"_a.none(true), "beta"_a.none(true), "mean"_a.noconvert(), "rstd"_a.noconvert(), "num_threads"_a,
        "post"_a = "none", "slope"_a = 0.01);
  m.def("ln_backward", &ln_backward, "dy"_a.noconvert(), "x"_a.noconvert(), "dx"_a.noconvert(), "M"_a, "D"_a,
        "mean"_a.noconvert(), "rstd"_a.noconvert(), "gamma"_a.none(true), "centered"_a, "dgamma"_a.none(true),
        "dbeta"_a.none(true), "num_threads"_a, "post"_a, "slope"_a, "beta"_a.none(true));
  py::class_<fastnorm::SampleParams>(m, "SampleParams")
      .def(py::init([](double loc, double scale, double low, double high, double a, double b) {
             return fastnorm::SampleParams{loc, scale, low, high, a, b};
           }),
           "loc"_a = 0.0, "scale"_a = 1.0, "low"_a = 0.0, "high"_a = 1.0, "a"_a = -2.0, "b"_a = 2.0);
  m.def("sample", &sample, "distribution"_a, "key"_a, "counter"_a, "out"_a.noconvert(), "params"_a,
        "num_threads"_a, "fresh_output"_a = false);
  // The sampler's chunk geometry, per value size: a chunk of values is a pure function of its first counter, so
  // any slice of a sample can be made alone (Generator's shard=).
  m.def("sample_chunk_values", [](int itemsize) {
    return itemsize == 4 ? fastnorm::kChunkColumns * fastnorm::values_per_column<float>()
                         : fastnorm::kChunkColumns * fastnorm::values_per_column<double>();
  });
  m.def("sample_chunk_blocks", [](int itemsize) {
    return itemsize == 4 ? fastnorm::chunk_blocks<float>() : fastnorm::chunk_blocks<double>();
  });
  m.def("philox4x32_10", [](std::array<std::uint32_t, 4> ctr, std::array<std::uint32_t, 2> key) {
    std::array<std::uint32_t, 4> out{};
    fastnorm::philox4x32_10(ctr.data(), key.data(), out.data());
    return out;
  });
  add_common_calls(m);
  m.def("empty", &empty, "shape"_a, "dtype"_a, "An uninitialised array from the buffer cache");
  m.def("buffer_reused", &buffer_reused, "a"_a.noconvert());
  m.def("set_buffer_cache", &fastnorm::buffers::set_limit, "nbytes"_a);
  m.def("buffer_cache_info", &buffer_cache_info);
  m.def("copy", &copy, "src"_a.noconvert(), "dst"_a.noconvert(), "num_threads"_a);
}
