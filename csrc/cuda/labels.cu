// Label validation and nearest sampling on CUDA: the twin of csrc/cpu/labels.cpp.
//
// An out-of-range label must raise a Python error, not trip a device assert (which would poison the
// CUDA context) nor be read silently. So the check is a kernel that records the smallest flat index
// of a bad label with an integer atomicMin, followed by one 8-byte device-to-host copy: the single
// host synchronisation of a label-indexed op on CUDA. The sampling kernel then runs on labels known
// to be valid.
#include "common.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>

#include <limits>

namespace semnorm {
namespace cuda {
namespace {

template <typename label_t>
__global__ void first_bad_label_kernel(const label_t* __restrict__ labels, int64_t numel, int64_t num_classes,
                                       unsigned long long* __restrict__ first_bad) {
  SEMNORM_GRID_STRIDE(i, numel) {
    const int64_t v = static_cast<int64_t>(labels[i]);
    if (v < 0 || v >= num_classes) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
}

template <typename label_t>
__global__ void sample_labels_kernel(const label_t* __restrict__ src, int32_t* __restrict__ dst, int64_t batch,
                                     int64_t in_h, int64_t in_w, int64_t height, int64_t width) {
  const int64_t total = batch * height * width;
  SEMNORM_GRID_STRIDE(i, total) {
    const int64_t w = i % width, h = (i / width) % height, n = i / (width * height);
    const int64_t sh = nearest_source_index(h, in_h, height), sw = nearest_source_index(w, in_w, width);
    dst[i] = static_cast<int32_t>(src[(n * in_h + sh) * in_w + sw]);
  }
}

}  // namespace
}  // namespace cuda

void check_label_values_cuda(const Tensor& labels, int64_t num_classes, const char* op) {
  TORCH_CHECK(num_classes > 0 && num_classes <= INT32_MAX, "semnorm.", op,
              ": num_classes must lie in [1, 2^31), got ", num_classes);
  TORCH_CHECK(labels.is_cuda(), "semnorm.", op, ": the CUDA label check got labels on ", labels.device());
  const c10::cuda::CUDAGuard guard(labels.device());
  const Tensor lab = labels.contiguous();
  const int64_t numel = lab.numel();
  const auto none = std::numeric_limits<int64_t>::max();
  Tensor first_bad = at::full({1}, none, lab.options().dtype(at::kLong));
  dispatch_label_type(lab.scalar_type(), op, [&](auto tag) {
    using label_t = decltype(tag);
    cuda::first_bad_label_kernel<label_t><<<cuda::grid_for(numel), cuda::kThreads, 0, cuda::stream()>>>(
        lab.data_ptr<label_t>(), numel, num_classes,
        reinterpret_cast<unsigned long long*>(first_bad.data_ptr<int64_t>()));
    SEMNORM_CUDA_CHECK_LAUNCH();
  });
  const int64_t bad = first_bad.item<int64_t>();
  if (bad != none) {
    const int64_t value = lab.reshape({-1})[bad].item<int64_t>();
    TORCH_CHECK_INDEX(false, "semnorm.", op, ": labels must lie in [0, ", num_classes, "), found ", value,
                      " at flat index ", bad);
  }
}

Tensor sample_labels_cuda(const Tensor& labels, int64_t batch, int64_t height, int64_t width, const char* op) {
  const c10::cuda::CUDAGuard guard(labels.device());
  const Tensor lab = labels.contiguous();
  if (lab.scalar_type() == at::kInt && lab.size(1) == height && lab.size(2) == width) return lab;
  Tensor out = at::empty({batch, height, width}, lab.options().dtype(at::kInt));
  const int64_t total = out.numel();
  dispatch_label_type(lab.scalar_type(), op, [&](auto tag) {
    using label_t = decltype(tag);
    cuda::sample_labels_kernel<label_t><<<cuda::grid_for(total), cuda::kThreads, 0, cuda::stream()>>>(
        lab.data_ptr<label_t>(), out.data_ptr<int32_t>(), batch, lab.size(1), lab.size(2), height, width);
    SEMNORM_CUDA_CHECK_LAUNCH();
  });
  return out;
}

}  // namespace semnorm
