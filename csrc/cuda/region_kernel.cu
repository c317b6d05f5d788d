// Region pool and region broadcast on CUDA: the twin of csrc/cpu/region_kernel.cpp. They are each
// other's adjoint, so each one's backward is the other (semnorm/ops/region.py).
//
// region_pool: one block per (n, c) plane chunk, kVec pixels per thread (vector loads where
// aligned); the per-label sums go through the segmented-sum machinery of label_index.cuh.
// Atomics: the fast path adds each block's shared-memory table (shared atomicAdd, after per-warp
// runs of equal labels are summed in registers) into a zeroed float32/float64 accumulator with
// global atomicAdd; under torch.use_deterministic_algorithms(True) the blocks store per-chunk
// tables instead and a second kernel adds them in a fixed order. Pixel counts use integer atomics
// (exact, so deterministic) in both modes. The finalize kernel divides by the counts (mean) and
// writes pooled (N, L, C) in x's dtype.
// region_broadcast: a gather; one block per (n, c) plane chunk stages the column codes[n, :, c] in
// shared memory (read in place when L is too large) and writes kVec pixels per thread as one vector.
// Inputs are made contiguous (channels_last x is copied to NCHW first, like the CPU kernel).
#include "../checks/region_checks.h"
#include "label_index.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>

namespace semnorm {
namespace {

using namespace cuda::label_index;
using cuda::kThreads;
using cuda::kWarp;

// counts[n, l] = number of pixels of sample n with label l (blocks: (n, chunk)).
__global__ void region_count_kernel(const int32_t* __restrict__ lab, int64_t HW, int64_t L, int64_t chunk,
                                    int64_t chunks, bool vec, unsigned long long* __restrict__ counts) {
  const int64_t n = blockIdx.x / chunks, k = blockIdx.x % chunks;
  const int64_t begin = k * chunk, end = begin + chunk < HW ? begin + chunk : HW;
  const int32_t* lp = lab + n * HW;
  const LabelTable<unsigned long long> table{counts + n * L, 0, true};
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  SegmentedRun<int, 1> run;
  for (int64_t s = begin + warp * kWarp * kVec; s < end; s += kThreads * kVec) {  // warp-uniform loop
    const int64_t i = s + lane * kVec;
    int l[kVec];
    load_labels(lp, i, end, vec, l);
    run.push_vec(l, [&](int e, int) { return l[e] >= 0 ? 1 : 0; }, table);
  }
  run.flush(table);
}

// Per-label sums of one (n, c) plane chunk into the block's table (entries: L).
template <typename scalar_t>
__global__ void region_pool_kernel(const scalar_t* __restrict__ x, const int32_t* __restrict__ lab, int64_t C,
                                   int64_t HW, int64_t chunk, TableLayout tl, bool vec, acc_t<scalar_t>* ws) {
  using acc = acc_t<scalar_t>;
  const int64_t plane = blockIdx.x / tl.chunks, k = blockIdx.x % tl.chunks, n = plane / C;
  const int64_t begin = k * chunk, end = begin + chunk < HW ? begin + chunk : HW;
  const scalar_t* xp = x + plane * HW;
  const int32_t* lp = lab + n * HW;
  acc* smem = dynamic_smem<acc>();
  const WarpTable<acc> wt = open_table(tl, ws, smem, plane, k);
  {
    const LabelTable<acc> table{wt.row, 0, wt.atomic};
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
    SegmentedRun<acc, 1> run;
    for (int64_t s = begin + warp * kWarp * kVec; s < end; s += kThreads * kVec) {  // warp-uniform loop
      const int64_t i = s + lane * kVec;
      int l[kVec];
      acc v[kVec];
      load_labels(lp, i, end, vec, l);
      load_vec_as(xp, i, end, vec, v);  // 0 past the end
      run.push_vec(l, [&](int e, int) { return v[e]; }, table);
    }
    run.flush(table);
  }
  close_table(tl, ws, smem, plane, k);
}

// pooled[n, l, c] = sum (or mean) of the tables; one thread per output.
template <typename scalar_t>
__global__ void region_pool_finalize_kernel(const acc_t<scalar_t>* __restrict__ ws, TableLayout tl,
                                            const int64_t* __restrict__ counts, scalar_t* __restrict__ pooled,
                                            int64_t N, int64_t L, int64_t C, bool mean) {
  using acc = acc_t<scalar_t>;
  SEMNORM_GRID_STRIDE(i, N * L * C) {
    const int64_t c = i % C, l = (i / C) % L, n = i / (L * C);
    acc v = table_entry(tl, ws, n * C + c, l);
    if (mean) {
      const int64_t cnt = counts[n * L + l];
      v = cnt > 0 ? v / static_cast<acc>(cnt) : acc(0);
    }
    pooled[i] = static_cast<scalar_t>(v);
  }
}

// out[n, c, p] = codes[n, lab[n, p], c] for the pixels of one (n, c) plane chunk.
template <typename scalar_t>
__global__ void region_broadcast_kernel(const scalar_t* __restrict__ codes, const int32_t* __restrict__ lab,
                                        scalar_t* __restrict__ out, int64_t C, int64_t HW, int64_t L, int64_t chunk,
                                        int64_t chunks, bool staged, bool vec) {
  const int64_t plane = blockIdx.x / chunks, k = blockIdx.x % chunks;
  const int64_t n = plane / C, c = plane % C;
  const int64_t begin = k * chunk, end = begin + chunk < HW ? begin + chunk : HW;
  const scalar_t* src = codes + n * L * C + c;  // column codes[n, :, c], stride C
  scalar_t* col = dynamic_smem<scalar_t>();
  if (staged) {  // block-uniform
    stage_column(col, src, L, C);
    __syncthreads();
  }
  const Column<scalar_t, scalar_t> column = staged ? Column<scalar_t, scalar_t>{col, 1} : Column<scalar_t, scalar_t>{src, C};
  const int32_t* lp = lab + n * HW;
  scalar_t* op = out + plane * HW;
  for (int64_t i = begin + static_cast<int64_t>(threadIdx.x) * kVec; i < end; i += kThreads * kVec) {
    int l[kVec];
    load_labels(lp, i, end, vec, l);
    scalar_t v[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e) v[e] = l[e] >= 0 ? column[l[e]] : scalar_t(0);
    store_vec(op, i, end, vec, v);
  }
}

std::tuple<Tensor, Tensor> region_pool_cuda(const Tensor& x, const Tensor& labels, int64_t num_classes, bool mean) {
  constexpr const char* op = "region_pool";
  check_activation(x, op);
  check_same_device(x, labels, op, "x", "labels");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), L = num_classes, HW = H * W;
  const Tensor lab = sample_labels(labels, N, H, W, L, op);
  const Tensor xc = x.contiguous();
  const int32_t* lp = lab.data_ptr<int32_t>();
  const bool lab_vec = vec_ok(lp, HW);

  Tensor counts = at::zeros({N, L}, x.options().dtype(at::kLong));
  {
    const Chunking ch = chunk_planes(N, HW);
    region_count_kernel<<<block_count(N * ch.chunks, op), kThreads, 0, cuda::stream()>>>(
        lp, HW, L, ch.chunk, ch.chunks, lab_vec, reinterpret_cast<unsigned long long*>(counts.data_ptr<int64_t>()));
    SEMNORM_CUDA_CHECK_LAUNCH();
  }

  Tensor pooled = at::empty({N, L, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_region_pool_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const TablePlan plan = plan_tables<acc>(N * C, HW, L, N * C, cuda::deterministic());
    Tensor ws = at::zeros({workspace_numel(plan.tl)}, x.options().dtype(opmath_dtype(x.scalar_type())));
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    region_pool_kernel<scalar_t>
        <<<block_count(N * C * plan.ch.chunks, op), kThreads, table_smem_bytes<acc>(plan.tl), cuda::stream()>>>(
            xp, lp, C, HW, plan.ch.chunk, plan.tl, lab_vec && vec_ok(xp, HW), ws.data_ptr<acc>());
    SEMNORM_CUDA_CHECK_LAUNCH();
    region_pool_finalize_kernel<scalar_t><<<cuda::grid_for(N * L * C), kThreads, 0, cuda::stream()>>>(
        ws.data_ptr<acc>(), plan.tl, counts.data_ptr<int64_t>(), pooled.data_ptr<scalar_t>(), N, L, C, mean);
    SEMNORM_CUDA_CHECK_LAUNCH();
  });
  return {pooled, counts};
}

Tensor region_broadcast_cuda(const Tensor& codes, const Tensor& labels, c10::SymInt height, c10::SymInt width) {
  constexpr const char* op = "region_broadcast";
  const std::pair<int64_t, int64_t> size = check_region_broadcast(codes, labels, height, width, op);
  const int64_t H = size.first, W = size.second;
  const c10::cuda::CUDAGuard guard(codes.device());
  const int64_t N = codes.size(0), L = codes.size(1), C = codes.size(2), HW = H * W;
  const Tensor lab = sample_labels(labels, N, H, W, L, op);
  const Tensor cc = codes.contiguous();
  Tensor out = at::empty({N, C, H, W}, codes.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, codes.scalar_type(), "semnorm_region_broadcast_cuda", [&] {
    const int64_t col_bytes = L * static_cast<int64_t>(sizeof(scalar_t));
    const bool staged = col_bytes <= kSharedBudget;
    const Chunking ch = chunk_planes(N * C, HW, std::max<int64_t>(kThreads * kVec, L));
    const int32_t* lp = lab.data_ptr<int32_t>();
    scalar_t* op_ = out.data_ptr<scalar_t>();
    region_broadcast_kernel<scalar_t>
        <<<block_count(N * C * ch.chunks, op), kThreads, staged ? col_bytes : 0, cuda::stream()>>>(
            cc.data_ptr<scalar_t>(), lp, op_, C, HW, L, ch.chunk, ch.chunks, staged, vec_ok(lp, HW) && vec_ok(op_, HW));
    SEMNORM_CUDA_CHECK_LAUNCH();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(semnorm, CUDA, m) {
  m.impl("region_pool", &region_pool_cuda);
  m.impl("region_broadcast", &region_broadcast_cuda);
}

}  // namespace semnorm
