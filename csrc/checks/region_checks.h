// Argument checks of region_broadcast, shared by csrc/cpu/region_kernel.cpp and
// csrc/cuda/region_kernel.cu so both devices accept the same inputs with the same messages.
// (region_pool's checks are check_activation + check_same_device from common.h.) The label values
// are checked later, by sample_labels. Plain host C++ (nvcc compiles it too).
#pragma once

#include "../common.h"

#include <c10/core/SymInt.h>

#include <utility>

namespace semnorm {

// Returns the output (H, W).
inline std::pair<int64_t, int64_t> check_region_broadcast(const Tensor& codes, const Tensor& labels,
                                                         const c10::SymInt& height, const c10::SymInt& width,
                                                         const char* op) {
  check_float(codes, op, "codes");
  check_dim(codes, 3, op, "codes");
  check_nonempty(codes, op, "codes");
  check_same_device(codes, labels, op, "codes", "labels");
  const int64_t H = height.expect_int(), W = width.expect_int();
  TORCH_CHECK(H > 0 && W > 0, "semnorm.", op, ": height and width must be positive, got ", H, " x ", W);
  return {H, W};
}

}  // namespace semnorm
