// An activation fused after a normalization (oneDNN's "post-op"): y = act(norm(x)) in the normalization's own
// pass, and a backward that recomputes the normalized value from x instead of storing it.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "fastnorm/activation_ops.h"
#include "fastnorm/enum_table.h"

namespace fastnorm {

// The activations a normalization can apply in its own pass, and the act:: struct behind each.
#define FASTNORM_POST_OPS(X) \
  X(none, Identity)          \
  X(relu, Relu)              \
  X(leaky_relu, LeakyRelu)   \
  X(silu, Silu)              \
  X(gelu, Gelu)

enum class PostOpKind : int { FASTNORM_POST_OPS(FASTNORM_ENUM_VALUE) };

// Python-facing names in enum order ("none", "relu", ...).
inline const std::vector<const char*>& post_op_names() {
  static const std::vector<const char*> names = {FASTNORM_POST_OPS(FASTNORM_ENUM_NAME)};
  return names;
}

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
#define FASTNORM_POST_OP_CASE(name, Op) \
  case PostOpKind::name:                \
    return f(act::Op{});
  switch (op.kind) { FASTNORM_POST_OPS(FASTNORM_POST_OP_CASE) }
#undef FASTNORM_POST_OP_CASE
  throw std::invalid_argument("unknown post-op");
}

// The post-op named `name` (one of post_op_names()) with leaky_relu's slope.
inline PostOp post_op_named(const std::string& name, double slope) {
  return {enum_from_name<PostOpKind>(post_op_names(), name, "activation"), slope};
}

}  // namespace fastnorm
