// Helpers shared by every semnorm kernel: argument checks with the argument's name in the message,
// PyTorch's legacy nearest-neighbour index rule, and the label sampler that validates the label range.
// Kept to narrow ATen headers: each translation unit compiles in seconds on a 2-core machine.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <c10/util/irange.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

namespace semnorm {

using at::Tensor;

// Accumulation type: float for half/bfloat16/float, double for double.
template <typename T>
using acc_t = at::opmath_type<T>;

inline void check_defined(const Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.defined(), "semnorm.", op, ": ", name, " is required");
}

inline void check_float(const Tensor& t, const char* op, const char* name) {
  check_defined(t, op, name);
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "semnorm.", op, ": ", name,
              " must be a floating point tensor, got ", t.scalar_type());
}

inline void check_dim(const Tensor& t, int64_t dim, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == dim, "semnorm.", op, ": ", name, " must have ", dim, " dimensions, got shape ",
              t.sizes());
}

inline void check_nonempty(const Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.numel() > 0, "semnorm.", op, ": ", name, " must not be empty, got shape ", t.sizes());
}

inline void check_same_device(const Tensor& a, const Tensor& b, const char* op, const char* name_a,
                              const char* name_b) {
  TORCH_CHECK(a.device() == b.device(), "semnorm.", op, ": ", name_a, " is on ", a.device(), " but ", name_b,
              " is on ", b.device());
}

inline void check_shape(const Tensor& t, at::IntArrayRef expected, const char* op, const char* name) {
  TORCH_CHECK(t.sizes() == expected, "semnorm.", op, ": ", name, " must have shape ", expected, ", got ",
              t.sizes());
}

inline void check_dtype(const Tensor& t, at::ScalarType expected, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == expected, "semnorm.", op, ": ", name, " must have dtype ", expected, ", got ",
              t.scalar_type());
}

// The dtype of statistics and parameter tables that go with activations of dtype `t`.
inline at::ScalarType opmath_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// PyTorch's legacy 'nearest' source index (ATen UpSample.h: nearest_idx with no explicit scale),
// reproduced bit for bit, float arithmetic included, so labels sampled here equal
// F.interpolate(labels, size=(H, W), mode='nearest'). Host and device (CUDA kernels use it too).
C10_HOST_DEVICE inline int64_t nearest_source_index(int64_t dst, int64_t in_size, int64_t out_size) {
  if (out_size == in_size) return dst;
  if (out_size == 2 * in_size) return dst >> 1;
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  const int64_t src = static_cast<int64_t>(floorf(static_cast<float>(dst) * scale));
  return src < in_size - 1 ? src : in_size - 1;
}

// Calls f(label_t{}) with label_t the C++ type of an integer label dtype (uint8, int32, int64).
template <typename F>
void dispatch_label_type(at::ScalarType st, const char* op, F&& f) {
  switch (st) {
    case at::kByte: f(uint8_t{}); break;
    case at::kInt: f(int32_t{}); break;
    case at::kLong: f(int64_t{}); break;
    default:
      TORCH_CHECK(false, "semnorm.", op, ": labels must be an integer tensor (uint8, int32 or int64), got ", st);
  }
}

// Checks labels: integer (uint8/int32/int64), shape (batch, Hl, Wl), values in [0, num_classes);
// returns them sampled at (height, width) as a contiguous int32 (batch, height, width) tensor on the
// labels' device. Every input label is range-checked, sampled or not, so bad input never passes
// silently (on CUDA this costs one device-to-host copy of a flag per call: see csrc/cuda/labels.cu).
Tensor sample_labels(const Tensor& labels, int64_t batch, int64_t height, int64_t width, int64_t num_classes,
                     const char* op);

// Range check alone, CPU labels.
void check_label_values(const Tensor& labels, int64_t num_classes, const char* op);

#ifdef SEMNORM_WITH_CUDA
// The CUDA twins (csrc/cuda/labels.cu); sample_labels calls them for CUDA labels.
void check_label_values_cuda(const Tensor& labels, int64_t num_classes, const char* op);
Tensor sample_labels_cuda(const Tensor& labels, int64_t batch, int64_t height, int64_t width, const char* op);
#endif

// Common checks on the (N, C, H, W) activation tensor.
inline void check_activation(const Tensor& x, const char* op, const char* name = "x") {
  check_float(x, op, name);
  check_dim(x, 4, op, name);
  check_nonempty(x, op, name);
}

// mean / rstd: (N, C) in x's opmath dtype, on x's device.
inline void check_stats(const Tensor& x, const Tensor& mean, const Tensor& rstd, const char* op) {
  const auto check_one = [&](const Tensor& t, const char* name) {
    check_defined(t, op, name);
    check_same_device(x, t, op, "x", name);
    check_shape(t, {x.size(0), x.size(1)}, op, name);
    check_dtype(t, opmath_dtype(x.scalar_type()), op, name);
  };
  check_one(mean, "mean");
  check_one(rstd, "rstd");
}

// stats_of_x of the modulate ops: 0 when mean and rstd are independent inputs, 1 when they are x's
// own instance statistics, 2 its batch statistics. The kernels compute the same either way; the
// autograd formula (semnorm/ops/stats.py, fold_stats_grad) adds the statistics' gradient to grad_x.
inline void check_stats_of_x(int64_t stats_of_x, const char* op) {
  TORCH_CHECK(stats_of_x >= 0 && stats_of_x <= 2, "semnorm.", op,
              ": stats_of_x must be 0 (independent statistics), 1 (instance) or 2 (batch), got ", stats_of_x);
}

// Optional per-pixel (N, H, W) map in x's opmath dtype; returns it contiguous (or undefined).
inline Tensor check_pixel_map(const std::optional<Tensor>& t, const Tensor& x, const char* op, const char* name) {
  if (!t.has_value() || !t->defined()) return Tensor();
  check_same_device(x, *t, op, "x", name);
  check_shape(*t, {x.size(0), x.size(2), x.size(3)}, op, name);
  check_dtype(*t, opmath_dtype(x.scalar_type()), op, name);
  return t->contiguous();
}

}  // namespace semnorm
