// Argument checks of class_modulate (CLADE), shared by csrc/cpu/class_modulate_kernel.cpp and
// csrc/cuda/class_modulate_kernel.cu so both devices accept the same inputs with the same messages.
// Plain host C++ (nvcc compiles it too); narrow headers only, like common.h.
#pragma once

#include "../common.h"

namespace semnorm {

// Checks of the forward and the backward except the label values (see class_modulate_labels): the
// CUDA kernels sample the labels only once the device guard is set.
inline void check_class_modulate_args(const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& labels,
                                      const Tensor& weight, const Tensor& bias, const char* op) {
  check_activation(x, op);
  check_stats(x, mean, rstd, op);
  const auto check_bank = [&](const Tensor& t, const char* name) {
    check_float(t, op, name);
    check_same_device(x, t, op, "x", name);
    check_dim(t, 2, op, name);
    check_nonempty(t, op, name);
    TORCH_CHECK(t.size(1) == x.size(1), "semnorm.", op, ": ", name, " must have C = ", x.size(1),
                " columns (one per channel of x), got shape ", t.sizes());
    check_dtype(t, opmath_dtype(x.scalar_type()), op, name);
  };
  check_bank(weight, "weight");
  check_bank(bias, "bias");
  check_shape(bias, weight.sizes(), op, "bias");
  check_same_device(x, labels, op, "x", "labels");
}

// grad_y of the backward: x's shape, dtype and device.
inline void check_class_modulate_grad(const Tensor& grad_y, const Tensor& x, const char* op) {
  check_defined(grad_y, op, "grad_y");
  check_same_device(x, grad_y, op, "x", "grad_y");
  check_shape(grad_y, x.sizes(), op, "grad_y");
  check_dtype(grad_y, x.scalar_type(), op, "grad_y");
}

// The labels range-checked and sampled at x's (H, W), on the labels' device.
inline Tensor class_modulate_labels(const Tensor& x, const Tensor& labels, const Tensor& weight, const char* op) {
  return sample_labels(labels, x.size(0), x.size(2), x.size(3), weight.size(0), op);
}

}  // namespace semnorm
