// Label validation and nearest sampling, shared by every label-indexed kernel (CUDA labels go to
// csrc/cuda/labels.cu).
#include "common.h"

#include <ATen/ops/empty.h>

#include <atomic>
#include <vector>

namespace semnorm {

namespace {

// Smallest flat index holding a label outside [0, num_classes), or -1.
template <typename label_t>
int64_t first_bad_label(const label_t* data, int64_t numel, int64_t num_classes) {
  std::atomic<int64_t> found{numel};
  at::parallel_for(0, numel, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end && i < found.load(std::memory_order_relaxed); ++i) {
      const int64_t v = static_cast<int64_t>(data[i]);
      if (v < 0 || v >= num_classes) {
        int64_t cur = found.load();
        while (i < cur && !found.compare_exchange_weak(cur, i)) {
        }
        return;
      }
    }
  });
  return found.load() < numel ? found.load() : -1;
}

template <typename label_t>
void sample_rows(const label_t* src, int32_t* dst, int64_t batch, int64_t in_h, int64_t in_w, int64_t height,
                 int64_t width) {
  std::vector<int64_t> cols(width);
  for (int64_t w = 0; w < width; ++w) cols[w] = nearest_source_index(w, in_w, width);
  at::parallel_for(0, batch * height, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / height, h = row % height;
      const label_t* s = src + (n * in_h + nearest_source_index(h, in_h, height)) * in_w;
      int32_t* d = dst + row * width;
      for (int64_t w = 0; w < width; ++w) d[w] = static_cast<int32_t>(s[cols[w]]);
    }
  });
}

}  // namespace

void check_label_values(const Tensor& labels, int64_t num_classes, const char* op) {
  TORCH_CHECK(num_classes > 0 && num_classes <= INT32_MAX, "semnorm.", op,
              ": num_classes must lie in [1, 2^31), got ", num_classes);
  TORCH_CHECK(labels.device().is_cpu(), "semnorm.", op, ": the CPU label check got labels on ", labels.device());
  const Tensor lab = labels.contiguous();
  dispatch_label_type(lab.scalar_type(), op, [&](auto tag) {
    using label_t = decltype(tag);
    const label_t* data = lab.data_ptr<label_t>();
    const int64_t bad = first_bad_label(data, lab.numel(), num_classes);
    TORCH_CHECK_INDEX(bad < 0, "semnorm.", op, ": labels must lie in [0, ", num_classes, "), found ",
                      bad < 0 ? 0 : static_cast<int64_t>(data[bad]), " at flat index ", bad);
  });
}

Tensor sample_labels(const Tensor& labels, int64_t batch, int64_t height, int64_t width, int64_t num_classes,
                     const char* op) {
  check_defined(labels, op, "labels");
  check_dim(labels, 3, op, "labels");
  TORCH_CHECK(labels.size(0) == batch, "semnorm.", op, ": labels has batch size ", labels.size(0),
              " but the activations have ", batch);
  check_nonempty(labels, op, "labels");
#ifdef SEMNORM_WITH_CUDA
  if (labels.is_cuda()) {
    check_label_values_cuda(labels, num_classes, op);
    return sample_labels_cuda(labels, batch, height, width, op);
  }
#endif
  check_label_values(labels, num_classes, op);
  const Tensor lab = labels.contiguous();
  Tensor out = at::empty({batch, height, width}, lab.options().dtype(at::kInt));
  dispatch_label_type(lab.scalar_type(), op, [&](auto tag) {
    using label_t = decltype(tag);
    sample_rows(lab.data_ptr<label_t>(), out.data_ptr<int32_t>(), batch, lab.size(1), lab.size(2), height, width);
  });
  return out;
}

}  // namespace semnorm
