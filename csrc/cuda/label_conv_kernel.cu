// Label convolution on CUDA: the twin of csrc/cpu/label_conv_kernel.cpp,
//   out[n, o, p] = sum over taps of table[t, o, tap, label(p + d_tap)], zero outside the image,
// t = 0 for a shared table (T = 1) or n (T = N).
//
// label_tap_gather: one block per (n, block of kOut = 4 output channels, pixel chunk). The block
// stages its (kOut, k*k, L) table slice in shared memory, label-major with the kOut channels
// interleaved, so each in-image tap of a pixel is one label read (L1) and one 16-byte shared load
// serving four outputs; the table is read in place when the slice does not fit.
// label_tap_gather_backward: grad_table[t, o, tap, l] = sum over pixels q with label(q) = l of
// grad[n, o, q - d_tap] (q - d_tap inside the image): a segmented sum keyed by the label of q with
// one value per tap, through the segmented-sum machinery of label_index.cuh (k = 1, 3, 5: all taps
// in one pass; k = 7: one row of taps per pass; larger k: one tap per pass). One block per (n, o)
// plane chunk. Atomics: the fast path adds each block's shared-memory (k*k, L) table (shared
// atomicAdd after per-warp runs of equal labels are summed in registers; global atomicAdd straight
// into the accumulator when the table does not fit in shared memory) into a zeroed (T*Cout, k*k, L)
// accumulator with global atomicAdd; under torch.use_deterministic_algorithms(True) the blocks
// store per-chunk (or per-warp) tables and the finalize kernel adds them in a fixed order.
// Inputs are made contiguous (channels_last tensors are copied first, like the CPU kernel).
#include "../checks/label_conv_checks.h"
#include "label_index.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

namespace semnorm {
namespace {

using namespace cuda::label_index;
using cuda::kThreads;
using cuda::kWarp;

constexpr int kOut = 4;  // output channels per forward block

// sum[b] += e[b], b < kOut, as one 16-byte shared load (float) or two (double). `e` is 16-byte aligned.
template <typename acc>
__device__ __forceinline__ void add_entry(acc (&sum)[kOut], const acc* e) {
  if constexpr (std::is_same<acc, float>::value) {
    const float4 q = *reinterpret_cast<const float4*>(e);
    sum[0] += q.x;
    sum[1] += q.y;
    sum[2] += q.z;
    sum[3] += q.w;
  } else {
    const double2 a = reinterpret_cast<const double2*>(e)[0], b = reinterpret_cast<const double2*>(e)[1];
    sum[0] += a.x;
    sum[1] += a.y;
    sum[2] += b.x;
    sum[3] += b.y;
  }
}

template <typename scalar_t>
__global__ void label_tap_gather_kernel(const scalar_t* __restrict__ table, const int32_t* __restrict__ lab,
                                        scalar_t* __restrict__ out, int64_t T, int64_t C, int K, int64_t L, int64_t H,
                                        int64_t W, int64_t chunk, int64_t chunks, int64_t cblocks, bool staged) {
  using acc = acc_t<scalar_t>;
  const int64_t item = blockIdx.x / chunks, k = blockIdx.x % chunks;
  const int64_t n = item / cblocks, o0 = (item % cblocks) * kOut;
  const int64_t t = T == 1 ? 0 : n;
  const int cb = C - o0 < kOut ? static_cast<int>(C - o0) : kOut;
  const int64_t KKL = static_cast<int64_t>(K) * K * L, HW = H * W;
  const int r = K / 2;
  const scalar_t* src = table + (t * C + o0) * KKL;  // rows o0 .. o0 + cb - 1 of KKL entries
  acc* stab = dynamic_smem<acc>();
  if (staged) {  // block-uniform; stab[i * kOut + b] = src[b * KKL + i], zero lanes past Cout
    for (int64_t idx = threadIdx.x; idx < kOut * KKL; idx += blockDim.x) {
      const int64_t b = idx / KKL, i = idx - b * KKL;
      stab[i * kOut + b] = b < cb ? static_cast<acc>(src[b * KKL + i]) : acc(0);
    }
    __syncthreads();
  }
  const int32_t* ln = lab + n * HW;
  scalar_t* op = out + (n * C + o0) * HW;
  const int64_t begin = k * chunk, end = begin + chunk < HW ? begin + chunk : HW;
  for (int64_t p = begin + threadIdx.x; p < end; p += blockDim.x) {
    const int64_t h = p / W, w = p - h * W;
    acc sum[kOut] = {};
    for (int ty = 0; ty < K; ++ty) {
      const int64_t yy = h + ty - r;
      if (yy < 0 || yy >= H) continue;
      for (int tx = 0; tx < K; ++tx) {
        const int64_t xx = w + tx - r;
        if (xx < 0 || xx >= W) continue;
        const int64_t l = ln[yy * W + xx];
        const int64_t tap = ty * K + tx;
        if (staged) {
          add_entry(sum, stab + (tap * L + l) * kOut);
        } else {
#pragma unroll
          for (int b = 0; b < kOut; ++b)
            if (b < cb) sum[b] += static_cast<acc>(src[b * KKL + tap * L + l]);
        }
      }
    }
#pragma unroll
    for (int b = 0; b < kOut; ++b)
      if (b < cb) op[b * HW + p] = static_cast<scalar_t>(sum[b]);
  }
}

// Segmented sums of one (n, o) plane chunk into the block's (k*k, L) table. KS: the kernel size
// when known at compile time (0: runtime K); NV: taps per pass (NV divides K*K).
template <typename scalar_t, int KS, int NV>
__global__ void label_tap_gather_backward_kernel(const scalar_t* __restrict__ grad, const int32_t* __restrict__ lab,
                                                 TableLayout tl, acc_t<scalar_t>* ws, int64_t C, int k_runtime,
                                                 int64_t L, int64_t H, int64_t W, int64_t chunk, bool vec) {
  using acc = acc_t<scalar_t>;
  const int K = KS > 0 ? KS : k_runtime, KK = K * K, r = K / 2;
  const int64_t HW = H * W;
  const int64_t plane = blockIdx.x / tl.chunks, k = blockIdx.x % tl.chunks, n = plane / C;
  const int64_t begin = k * chunk, end = begin + chunk < HW ? begin + chunk : HW;
  const scalar_t* gp = grad + plane * HW;
  const int32_t* lp = lab + n * HW;
  acc* smem = dynamic_smem<acc>();
  const WarpTable<acc> wt = open_table(tl, ws, smem, plane, k);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  for (int g0 = 0; g0 < KK; g0 += NV) {  // block-uniform
    const LabelTable<acc> table{wt.row + static_cast<int64_t>(g0) * L, L, wt.atomic};
    SegmentedRun<acc, NV> run;
    for (int64_t s = begin + warp * kWarp * kVec; s < end; s += kThreads * kVec) {  // warp-uniform loop
      const int64_t i = s + lane * kVec;
      int l[kVec];
      load_labels(lp, i, end, vec, l);
      int64_t hq[kVec], wq[kVec];  // (row, column) of pixel i + e
      {
        int64_t h = i / W, w = i - h * W;
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
          hq[e] = h;
          wq[e] = w;
          if (++w == W) {
            w = 0;
            ++h;
          }
        }
      }
      // grad[n, o, q - d_tap] for pixel q = i + e and tap g0 + j; zero outside the image.
      const auto value = [&](int e, int j) -> acc {
        if (l[e] < 0) return acc(0);
        const int tap = g0 + j;
        const int64_t ph = hq[e] - (tap / K - r), pw = wq[e] - (tap % K - r);
        if (ph < 0 || ph >= H || pw < 0 || pw >= W) return acc(0);
        return static_cast<acc>(gp[ph * W + pw]);
      };
      run.push_vec(l, value, table);
    }
    run.flush(table);
  }
  close_table(tl, ws, smem, plane, k);
}

template <typename scalar_t>
__global__ void label_tap_gather_backward_finalize_kernel(const acc_t<scalar_t>* __restrict__ ws, TableLayout tl,
                                                          scalar_t* __restrict__ grad_table, int64_t total) {
  SEMNORM_GRID_STRIDE(i, total) {
    grad_table[i] = static_cast<scalar_t>(table_entry(tl, ws, i / tl.entries, i % tl.entries));
  }
}

Tensor label_tap_gather_cuda(const Tensor& table, const Tensor& labels, int64_t kernel_size, c10::SymInt height,
                             c10::SymInt width) {
  constexpr const char* op = "label_tap_gather";
  const LabelConvSizes sz = check_label_tap_gather(table, labels, kernel_size, height, width, op);
  const int64_t N = sz.N, T = sz.T, C = sz.C, K = sz.K, L = sz.L, H = sz.H, W = sz.W;
  const c10::cuda::CUDAGuard guard(table.device());
  const Tensor lab = sample_labels(labels, N, H, W, L, op);
  const Tensor tc = table.contiguous();
  Tensor out = at::empty({N, C, H, W}, table.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, table.scalar_type(), "semnorm_label_tap_gather_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const int64_t slice_bytes = kOut * K * K * L * static_cast<int64_t>(sizeof(acc));
    const bool staged = slice_bytes <= kSharedBudget;
    const int64_t cblocks = cuda::ceil_div(C, kOut);
    const Chunking ch = chunk_planes(N * cblocks, H * W, std::max<int64_t>(kThreads * kVec, K * K * L));
    label_tap_gather_kernel<scalar_t>
        <<<block_count(N * cblocks * ch.chunks, op), kThreads, staged ? slice_bytes : 0, cuda::stream()>>>(
            tc.data_ptr<scalar_t>(), lab.data_ptr<int32_t>(), out.data_ptr<scalar_t>(), T, C, static_cast<int>(K), L,
            H, W, ch.chunk, ch.chunks, cblocks, staged);
    SEMNORM_CUDA_CHECK_LAUNCH();
  });
  return out;
}

Tensor label_tap_gather_backward_cuda(const Tensor& grad_out, const Tensor& labels, int64_t num_tables,
                                      int64_t num_classes, int64_t kernel_size) {
  constexpr const char* op = "label_tap_gather_backward";
  const LabelConvSizes sz =
      check_label_tap_gather_backward(grad_out, labels, num_tables, num_classes, kernel_size, op);
  const int64_t N = sz.N, T = sz.T, C = sz.C, K = sz.K, L = sz.L, H = sz.H, W = sz.W;
  const int64_t KK = K * K, HW = H * W;
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const Tensor lab = sample_labels(labels, N, H, W, L, op);
  const Tensor gc = grad_out.contiguous();
  Tensor grad_table = at::empty({T, C, KK, L}, grad_out.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(),
                                  "semnorm_label_tap_gather_backward_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const TablePlan plan = plan_tables<acc>(N * C, HW, KK * L, T * C, cuda::deterministic());
    Tensor ws = at::zeros({workspace_numel(plan.tl)}, grad_out.options().dtype(opmath_dtype(grad_out.scalar_type())));
    const int32_t* lp = lab.data_ptr<int32_t>();
    const dim3 grid(block_count(N * C * plan.ch.chunks, op));
    const int64_t smem = table_smem_bytes<acc>(plan.tl);
    const auto launch = [&](auto kernel) {
      kernel<<<grid, kThreads, smem, cuda::stream()>>>(gc.data_ptr<scalar_t>(), lp, plan.tl, ws.data_ptr<acc>(), C,
                                                       static_cast<int>(K), L, H, W, plan.ch.chunk, vec_ok(lp, HW));
      SEMNORM_CUDA_CHECK_LAUNCH();
    };
    switch (K) {
      case 1: launch(label_tap_gather_backward_kernel<scalar_t, 1, 1>); break;
      case 3: launch(label_tap_gather_backward_kernel<scalar_t, 3, 9>); break;
      case 5: launch(label_tap_gather_backward_kernel<scalar_t, 5, 25>); break;
      case 7: launch(label_tap_gather_backward_kernel<scalar_t, 7, 7>); break;
      default: launch(label_tap_gather_backward_kernel<scalar_t, 0, 1>); break;
    }
    label_tap_gather_backward_finalize_kernel<scalar_t><<<cuda::grid_for(grad_table.numel()), kThreads, 0, cuda::stream()>>>(
        ws.data_ptr<acc>(), plan.tl, grad_table.data_ptr<scalar_t>(), grad_table.numel());
    SEMNORM_CUDA_CHECK_LAUNCH();
  });
  return grad_table;
}

}  // namespace

TORCH_LIBRARY_IMPL(semnorm, CUDA, m) {
  m.impl("label_tap_gather", &label_tap_gather_cuda);
  m.impl("label_tap_gather_backward", &label_tap_gather_backward_cuda);
}

}  // namespace semnorm
