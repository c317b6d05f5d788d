// Argument checks of label_tap_gather (label convolution), shared by csrc/cpu/label_conv_kernel.cpp
// and csrc/cuda/label_conv_kernel.cu so both devices accept the same inputs with the same messages.
// The label values are checked later, by sample_labels (on CUDA once the device guard is set).
// Plain host C++ (nvcc compiles it too); narrow headers only, like common.h.
#pragma once

#include "../common.h"

#include <c10/core/SymInt.h>

namespace semnorm {

// Sizes of a label_tap_gather call: N samples, T tables (1 or N), C output channels, kernel size K,
// L classes, output H x W.
struct LabelConvSizes {
  int64_t N, T, C, K, L, H, W;
};

inline void check_kernel_size(int64_t kernel_size, const char* op) {
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, "semnorm.", op,
              ": kernel_size must be a positive odd integer, got ", kernel_size);
}

inline LabelConvSizes check_label_tap_gather(const Tensor& table, const Tensor& labels, int64_t kernel_size,
                                             const c10::SymInt& height, const c10::SymInt& width, const char* op) {
  check_float(table, op, "table");
  check_dim(table, 4, op, "table");
  check_nonempty(table, op, "table");
  check_kernel_size(kernel_size, op);
  check_same_device(table, labels, op, "table", "labels");
  const int64_t H = height.expect_int(), W = width.expect_int();
  TORCH_CHECK(H > 0 && W > 0, "semnorm.", op, ": height and width must be positive, got ", H, " x ", W);
  check_defined(labels, op, "labels");
  check_dim(labels, 3, op, "labels");
  const int64_t N = labels.size(0), T = table.size(0), C = table.size(1), K = kernel_size, L = table.size(3);
  TORCH_CHECK(table.size(2) == K * K, "semnorm.", op, ": table must have shape (T, Cout, kernel_size^2 = ", K * K,
              ", L), got ", table.sizes());
  TORCH_CHECK(T == 1 || T == N, "semnorm.", op, ": table must have 1 or N = ", N,
              " entries in dimension 0 (one per sample), got ", T);
  return {N, T, C, K, L, H, W};
}

inline LabelConvSizes check_label_tap_gather_backward(const Tensor& grad_out, const Tensor& labels,
                                                      int64_t num_tables, int64_t num_classes, int64_t kernel_size,
                                                      const char* op) {
  check_activation(grad_out, op, "grad_out");
  check_kernel_size(kernel_size, op);
  check_same_device(grad_out, labels, op, "grad_out", "labels");
  const int64_t N = grad_out.size(0), C = grad_out.size(1), H = grad_out.size(2), W = grad_out.size(3);
  const int64_t T = num_tables, K = kernel_size, L = num_classes;
  TORCH_CHECK(T == 1 || T == N, "semnorm.", op, ": num_tables must be 1 or N = ", N, ", got ", T);
  return {N, T, C, K, L, H, W};
}

}  // namespace semnorm
