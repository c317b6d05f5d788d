// Region pool and region broadcast on the CPU: the segmented scatter-add and the gather at the heart
// of the label-indexed family. They are each other's adjoint, so each one's backward is the other.
#include "checks/region_checks.h"
#include "common.h"
#include "cpu/label_runs.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace semnorm {
namespace {

// One (n, c) plane at a time: each run of equal labels is summed in registers and added to a private
// per-label accumulator, then the L sums (or means) go to pooled[n, :, c]. No atomics, no one-hot,
// one read of x.
template <typename scalar_t>
void region_pool_cpu_impl(const scalar_t* x, const LabelRuns& runs, const int64_t* counts, scalar_t* pooled,
                          int64_t N, int64_t C, int64_t HW, int64_t L, bool mean) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> sums(L);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      std::fill(sums.begin(), sums.end(), acc(0));
      const scalar_t* xp = x + nc * HW;
      for (const LabelRun* run = runs.begin(n); run != runs.end(n); ++run)
        sums[run->label] += lane_sum<acc>(run->begin, run->end, [&](int64_t i) { return static_cast<acc>(xp[i]); });
      scalar_t* out = pooled + n * L * C + c;
      const int64_t* cnt = counts + n * L;
      for (int64_t l = 0; l < L; ++l) {
        acc v = sums[l];
        if (mean) v = cnt[l] > 0 ? v / static_cast<acc>(cnt[l]) : acc(0);
        out[l * C] = static_cast<scalar_t>(v);
      }
    }
  });
}

// op[begin, end) = value, for runs visited in increasing order within a plane of hw elements. Runs of
// natural masks are short (tens of pixels), so std::fill's alignment prologue and scalar tail cost
// as much as the stores: instead, whole 16-byte stores run past `end` into the next run, which
// rewrites those elements after this one; only a run whose overshoot would leave the plane (the
// plane after it may belong to another thread) ends exactly.
template <typename scalar_t>
inline void fill_run(scalar_t* op, int64_t begin, int64_t end, int64_t hw, scalar_t value) {
  constexpr int64_t kLanes = 16 / sizeof(scalar_t);
  int64_t i = begin;
  if (begin + (end - begin + kLanes - 1) / kLanes * kLanes <= hw) {
    scalar_t pattern[kLanes];
    std::fill(pattern, pattern + kLanes, value);
    // A fixed-size memcpy is one unaligned vector store on every target (no ISA-specific intrinsic).
    for (; i < end; i += kLanes) std::memcpy(op + i, pattern, sizeof(pattern));
  } else {
    std::fill(op + i, op + end, value);
  }
}

// out[n, c, p] = codes[n, lab[n, p], c]: per plane, each run of equal labels is a constant fill.
template <typename scalar_t>
void region_broadcast_cpu_impl(const scalar_t* codes, const LabelRuns& runs, scalar_t* out, int64_t N, int64_t C,
                               int64_t HW, int64_t L) {
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      const scalar_t* column = codes + n * L * C + c;  // codes[n, l, c] = column[l * C]
      scalar_t* op = out + nc * HW;
      for (const LabelRun* run = runs.begin(n); run != runs.end(n); ++run)
        fill_run(op, run->begin, run->end, HW, column[run->label * C]);
    }
  });
}

std::tuple<Tensor, Tensor> region_pool_cpu(const Tensor& x, const Tensor& labels, int64_t num_classes, bool mean) {
  constexpr const char* op = "region_pool";
  check_activation(x, op);
  check_same_device(x, labels, op, "x", "labels");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), L = num_classes;
  const Tensor lab = sample_labels(labels, N, H, W, L, op);
  const Tensor xc = x.contiguous();

  const LabelRuns runs(lab.data_ptr<int32_t>(), N, H * W);
  Tensor counts = at::zeros({N, L}, x.options().dtype(at::kLong));
  int64_t* cnt = counts.data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n)
    for (const LabelRun* run = runs.begin(n); run != runs.end(n); ++run) cnt[n * L + run->label] += run->end - run->begin;

  Tensor pooled = at::empty({N, L, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_region_pool", [&] {
    region_pool_cpu_impl<scalar_t>(xc.data_ptr<scalar_t>(), runs, cnt, pooled.data_ptr<scalar_t>(), N, C, H * W, L,
                                   mean);
  });
  return {pooled, counts};
}

Tensor region_broadcast_cpu(const Tensor& codes, const Tensor& labels, c10::SymInt height, c10::SymInt width) {
  constexpr const char* op = "region_broadcast";
  const std::pair<int64_t, int64_t> size = check_region_broadcast(codes, labels, height, width, op);
  const int64_t H = size.first, W = size.second;
  const int64_t N = codes.size(0), L = codes.size(1), C = codes.size(2);
  const Tensor lab = sample_labels(labels, N, H, W, L, op);
  const Tensor cc = codes.contiguous();
  const LabelRuns runs(lab.data_ptr<int32_t>(), N, H * W);
  Tensor out = at::empty({N, C, H, W}, codes.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, codes.scalar_type(), "semnorm_region_broadcast", [&] {
    region_broadcast_cpu_impl<scalar_t>(cc.data_ptr<scalar_t>(), runs, out.data_ptr<scalar_t>(), N, C, H * W, L);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(semnorm, CPU, m) {
  m.impl("region_pool", &region_pool_cpu);
  m.impl("region_broadcast", &region_broadcast_cpu);
}

}  // namespace semnorm
