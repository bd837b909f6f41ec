// An activation fused after a normalization (oneDNN's "post-op"): y = act(norm(x)) in the normalization's own
// pass, and a backward that recomputes the normalized value from x instead of storing it.
#pragma once

#include <stdexcept>

#include "fastnorm/activation_ops.h"

namespace fastnorm {

enum class PostOpKind : int { none = 0, relu = 1, leaky_relu = 2, silu = 3, gelu = 4 };

struct PostOp {
  PostOpKind kind = PostOpKind::none;
  double slope = 0.01;  // leaky_relu's negative slope
  bool active() const { return kind != PostOpKind::none; }
  template <class T>
  act::Params<T> params() const {
    return {static_cast<T>(slope), T(0)};
  }
};

// Calls f(Op{}) for the activation struct behind `op`.
template <class F>
void visit_post_op(const PostOp& op, F&& f) {
  switch (op.kind) {
    case PostOpKind::none: return f(act::Identity{});
    case PostOpKind::relu: return f(act::Relu{});
    case PostOpKind::leaky_relu: return f(act::LeakyRelu{});
    case PostOpKind::silu: return f(act::Silu{});
    case PostOpKind::gelu: return f(act::Gelu{});
  }
  throw std::invalid_argument("unknown post-op");
}

}  // namespace fastnorm
