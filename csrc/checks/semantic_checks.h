// Argument checks of semantic_modulate (SCN) and candidate_combine (SCC), shared by
// csrc/cpu/semantic_kernel.cpp and csrc/cuda/semantic_kernel.cu so both devices accept the same
// inputs with the same messages. Plain host C++ (nvcc compiles it too); narrow headers only.
#pragma once

#include "../common.h"

namespace semnorm {

inline void check_semantic_inputs(const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& vectors,
                                  const Tensor& bank, const char* op) {
  check_activation(x, op);
  check_stats(x, mean, rstd, op);
  check_float(vectors, op, "vectors");
  check_same_device(x, vectors, op, "x", "vectors");
  check_dim(vectors, 4, op, "vectors");
  check_nonempty(vectors, op, "vectors");
  const int64_t K = vectors.size(1);
  check_shape(vectors, {x.size(0), K, x.size(2), x.size(3)}, op, "vectors");
  check_dtype(vectors, x.scalar_type(), op, "vectors");
  check_float(bank, op, "bank");
  check_same_device(x, bank, op, "x", "bank");
  check_dim(bank, 2, op, "bank");
  check_shape(bank, {K, 2 * x.size(1)}, op, "bank");
  check_dtype(bank, opmath_dtype(x.scalar_type()), op, "bank");
}

// The backward's inputs: the forward's plus grad_y shaped like x.
inline void check_semantic_backward_inputs(const Tensor& grad_y, const Tensor& x, const Tensor& mean,
                                           const Tensor& rstd, const Tensor& vectors, const Tensor& bank,
                                           const char* op) {
  check_semantic_inputs(x, mean, rstd, vectors, bank, op);
  check_float(grad_y, op, "grad_y");
  check_same_device(x, grad_y, op, "x", "grad_y");
  check_shape(grad_y, x.sizes(), op, "grad_y");
  check_dtype(grad_y, x.scalar_type(), op, "grad_y");
}

inline void check_combine_inputs(const Tensor& vectors, const Tensor& candidates, const char* op) {
  check_float(vectors, op, "vectors");
  check_dim(vectors, 4, op, "vectors");
  check_nonempty(vectors, op, "vectors");
  check_float(candidates, op, "candidates");
  check_same_device(vectors, candidates, op, "vectors", "candidates");
  check_dim(candidates, 5, op, "candidates");
  check_nonempty(candidates, op, "candidates");
  const int64_t N = vectors.size(0), K = vectors.size(1), H = vectors.size(2), W = vectors.size(3);
  check_shape(candidates, {N, K, candidates.size(2), H, W}, op, "candidates");
  check_dtype(candidates, vectors.scalar_type(), op, "candidates");
}

// The backward's inputs: the forward's plus grad_y of the output's shape (N, C, H, W).
inline void check_combine_backward_inputs(const Tensor& grad_y, const Tensor& vectors, const Tensor& candidates,
                                          const char* op) {
  check_combine_inputs(vectors, candidates, op);
  const int64_t N = vectors.size(0), C = candidates.size(2), H = vectors.size(2), W = vectors.size(3);
  check_float(grad_y, op, "grad_y");
  check_same_device(vectors, grad_y, op, "vectors", "grad_y");
  check_shape(grad_y, {N, C, H, W}, op, "grad_y");
  check_dtype(grad_y, vectors.scalar_type(), op, "grad_y");
}

}  // namespace semnorm
