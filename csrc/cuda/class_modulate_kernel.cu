// CLADE guided sampling fused with normalize + modulate on CUDA: the twin of
// csrc/cpu/class_modulate_kernel.cpp,
//   y = (x - mean[n,c]) * rstd[n,c] * (offset + weight[l,c] * sg[n,p]) + bias[l,c] * sb[n,p],
// l the label at pixel p (sampled to (H, W) by sample_labels), sg / sb the optional ICPE factors.
//
// Forward: one block per (n, c) plane chunk; the block stages the columns weight[:, c] (folded
// with rstd and offset into a per-label gain when there is no sg) and bias[:, c] in shared memory
// (read in place when L is too large), then streams kVec pixels per thread (vector loads/stores
// where aligned): one read of x, one write of y.
// Backward, plane pass: one block per (n, c) plane chunk reads grad_y and x once, writes grad_x,
// sums dy * gamma_eff and dy * gamma_eff * (x - mean) for grad_mean / grad_rstd (block sums stored
// per chunk, added in chunk order by the finalize kernel: deterministic in both modes), and the
// per-class sums of dy * xhat * sg (grad_weight) and dy * sb (grad_bias) through the segmented-sum
// machinery of label_index.cuh. Atomics: the fast path adds each block's shared-memory (2, L) table
// (shared atomicAdd after per-warp runs of equal labels are summed in registers) into a zeroed
// (C, 2, L) accumulator with global atomicAdd; under torch.use_deterministic_algorithms(True) the
// blocks store per-chunk tables and the finalize kernel adds them over (n, chunk) in a fixed order.
// Backward, pixel pass (only with sg / sb): grad_sg / grad_sb are sums over channels per pixel;
// one thread per kVec pixels loops over the channels (no atomics). It reads grad_y and x again.
// Inputs are made contiguous (channels_last x is copied to NCHW first, like the CPU kernel).
#include "../checks/class_modulate_checks.h"
#include "label_index.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

namespace semnorm {
namespace {

using namespace cuda::label_index;
using cuda::kThreads;
using cuda::kWarp;

// Columns of the (L, C) banks are staged in shared memory up to this size each.
constexpr int64_t kColumnBudget = 16 * 1024;

template <typename scalar_t>
__global__ void class_modulate_kernel(const scalar_t* __restrict__ x, const acc_t<scalar_t>* __restrict__ mean,
                                      const acc_t<scalar_t>* __restrict__ rstd, const int32_t* __restrict__ lab,
                                      const acc_t<scalar_t>* __restrict__ weight,
                                      const acc_t<scalar_t>* __restrict__ bias, const acc_t<scalar_t>* __restrict__ sg,
                                      const acc_t<scalar_t>* __restrict__ sb, scalar_t* __restrict__ y, int64_t C,
                                      int64_t HW, int64_t L, int64_t chunk, int64_t chunks, acc_t<scalar_t> off,
                                      bool staged, bool vec) {
  using acc = acc_t<scalar_t>;
  const int64_t plane = blockIdx.x / chunks, k = blockIdx.x % chunks;
  const int64_t n = plane / C, c = plane % C;
  const int64_t begin = k * chunk, end = begin + chunk < HW ? begin + chunk : HW;
  const acc m = mean[plane], r = rstd[plane];
  const bool has_sg = sg != nullptr, has_sb = sb != nullptr;
  acc* smem = dynamic_smem<acc>();
  if (staged) {  // block-uniform. Without sg, column 0 holds the gain r * (offset + weight[l, c]).
    for (int64_t l = threadIdx.x; l < L; l += blockDim.x) {
      const acc w = weight[l * C + c];
      smem[l] = has_sg ? w : r * (off + w);
      smem[L + l] = bias[l * C + c];
    }
    __syncthreads();
  }
  const Column<acc, acc> wcol = staged ? Column<acc, acc>{smem, 1} : Column<acc, acc>{weight + c, C};
  const Column<acc, acc> bcol = staged ? Column<acc, acc>{smem + L, 1} : Column<acc, acc>{bias + c, C};
  const scalar_t* xp = x + plane * HW;
  const int32_t* lp = lab + n * HW;
  const acc* sgp = has_sg ? sg + n * HW : nullptr;
  const acc* sbp = has_sb ? sb + n * HW : nullptr;
  scalar_t* yp = y + plane * HW;
  for (int64_t i = begin + static_cast<int64_t>(threadIdx.x) * kVec; i < end; i += kThreads * kVec) {
    int l[kVec];
    acc xv[kVec], sgv[kVec], sbv[kVec];
    load_labels(lp, i, end, vec, l);
    load_vec_as(xp, i, end, vec, xv);
    if (has_sg) load_vec(sgp, i, end, vec, sgv);
    if (has_sb) load_vec(sbp, i, end, vec, sbv);
    scalar_t out[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      acc v = acc(0);
      if (l[e] >= 0) {
        const acc beta = has_sb ? bcol[l[e]] * sbv[e] : bcol[l[e]];
        if (has_sg) {
          v = (xv[e] - m) * r * (off + wcol[l[e]] * sgv[e]) + beta;
        } else {
          const acc gain = staged ? wcol[l[e]] : r * (off + wcol[l[e]]);
          v = (xv[e] - m) * gain + beta;
        }
      }
      out[e] = static_cast<scalar_t>(v);
    }
    store_vec(yp, i, end, vec, out);
  }
}

// Plane pass of the backward (see the top of the file). Table entries: j * L + l with j = 0 for
// grad_weight and j = 1 for grad_bias; plane_ws[(plane * chunks + chunk) * 2 + {0, 1}] the block
// sums of dy * gamma_eff and dy * gamma_eff * (x - mean).
template <typename scalar_t>
__global__ void class_modulate_backward_kernel(
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x, const acc_t<scalar_t>* __restrict__ mean,
    const acc_t<scalar_t>* __restrict__ rstd, const int32_t* __restrict__ lab,
    const acc_t<scalar_t>* __restrict__ weight, const acc_t<scalar_t>* __restrict__ sg,
    const acc_t<scalar_t>* __restrict__ sb, scalar_t* __restrict__ dx, TableLayout tl, acc_t<scalar_t>* ws,
    acc_t<scalar_t>* __restrict__ plane_ws, int64_t C, int64_t HW, int64_t L, int64_t chunk, acc_t<scalar_t> off,
    bool staged, bool vec) {
  using acc = acc_t<scalar_t>;
  __shared__ acc scratch[kThreads / kWarp];
  const int64_t plane = blockIdx.x / tl.chunks, k = blockIdx.x % tl.chunks;
  const int64_t n = plane / C, c = plane % C;
  const int64_t begin = k * chunk, end = begin + chunk < HW ? begin + chunk : HW;
  const acc m = mean[plane], r = rstd[plane];
  const bool has_sg = sg != nullptr, has_sb = sb != nullptr;
  acc* col = dynamic_smem<acc>();
  acc* tables = col + (staged ? L : 0);
  if (staged) stage_column(col, weight + c, L, C);  // block-uniform
  __syncthreads();
  const Column<acc, acc> wcol = staged ? Column<acc, acc>{col, 1} : Column<acc, acc>{weight + c, C};
  const WarpTable<acc> wt = open_table(tl, ws, tables, plane, k);
  acc sum_dg = acc(0), sum_dgxm = acc(0);
  {
    const LabelTable<acc> table{wt.row, L, wt.atomic};
    const scalar_t* dyp = dy + plane * HW;
    const scalar_t* xp = x + plane * HW;
    scalar_t* dxp = dx + plane * HW;
    const int32_t* lp = lab + n * HW;
    const acc* sgp = has_sg ? sg + n * HW : nullptr;
    const acc* sbp = has_sb ? sb + n * HW : nullptr;
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
    SegmentedRun<acc, 2> run;
    for (int64_t s = begin + warp * kWarp * kVec; s < end; s += kThreads * kVec) {  // warp-uniform loop
      const int64_t i = s + lane * kVec;
      int l[kVec];
      acc d[kVec], xv[kVec], sgv[kVec], sbv[kVec];
      load_labels(lp, i, end, vec, l);
      load_vec_as(dyp, i, end, vec, d);
      load_vec_as(xp, i, end, vec, xv);
      if (has_sg) load_vec(sgp, i, end, vec, sgv);
      if (has_sb) load_vec(sbp, i, end, vec, sbv);
      acc gw[kVec], gb[kVec];
      scalar_t gx[kVec];
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        gw[e] = gb[e] = acc(0);
        gx[e] = scalar_t(0);
        if (l[e] >= 0) {
          const acc xm = xv[e] - m, s_ = has_sg ? sgv[e] : acc(1);
          const acc dg = d[e] * (off + wcol[l[e]] * s_);  // dy * gamma_eff
          gx[e] = static_cast<scalar_t>(dg * r);
          sum_dg += dg;
          sum_dgxm += dg * xm;
          gw[e] = d[e] * xm * r * s_;  // dy * xhat * sg
          gb[e] = has_sb ? d[e] * sbv[e] : d[e];
        }
      }
      store_vec(dxp, i, end, vec, gx);
      run.push_vec(l, [&](int e, int j) { return j == 0 ? gw[e] : gb[e]; }, table);
    }
    run.flush(table);
  }
  close_table(tl, ws, tables, plane, k);
  const acc a = cuda::block_sum(sum_dg, scratch);
  const acc b = cuda::block_sum(sum_dgxm, scratch);
  if (threadIdx.x == 0) {
    plane_ws[(plane * tl.chunks + k) * 2] = a;
    plane_ws[(plane * tl.chunks + k) * 2 + 1] = b;
  }
}

// grad_weight[l, c], grad_bias[l, c] from the tables (rows c, entries j * L + l).
template <typename acc>
__global__ void class_modulate_bank_finalize_kernel(const acc* __restrict__ ws, TableLayout tl,
                                                    acc* __restrict__ grad_weight, acc* __restrict__ grad_bias,
                                                    int64_t L, int64_t C) {
  SEMNORM_GRID_STRIDE(i, L * C) {
    const int64_t l = i / C, c = i % C;
    grad_weight[i] = table_entry(tl, ws, c, l);
    grad_bias[i] = table_entry(tl, ws, c, L + l);
  }
}

// grad_mean[n, c] = -rstd * sum dy * gamma_eff, grad_rstd[n, c] = sum dy * gamma_eff * (x - mean),
// adding the chunks of the plane in order.
template <typename acc>
__global__ void class_modulate_stats_finalize_kernel(const acc* __restrict__ plane_ws, const acc* __restrict__ rstd,
                                                     acc* __restrict__ grad_mean, acc* __restrict__ grad_rstd,
                                                     int64_t planes, int64_t chunks) {
  SEMNORM_GRID_STRIDE(p, planes) {
    acc a = acc(0), b = acc(0);
    for (int64_t k = 0; k < chunks; ++k) {
      a += plane_ws[(p * chunks + k) * 2];
      b += plane_ws[(p * chunks + k) * 2 + 1];
    }
    grad_mean[p] = -a * rstd[p];
    grad_rstd[p] = b;
  }
}

// Pixel pass: grad_sg[n, p] = sum_c dy * xhat * weight[l, c], grad_sb[n, p] = sum_c dy * bias[l, c];
// weight_t / bias_t are the banks transposed to (C, L). Blocks: (n, chunk), kVec pixels per thread.
template <typename scalar_t>
__global__ void class_modulate_pixels_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                                             const acc_t<scalar_t>* __restrict__ mean,
                                             const acc_t<scalar_t>* __restrict__ rstd, const int32_t* __restrict__ lab,
                                             const acc_t<scalar_t>* __restrict__ weight_t,
                                             const acc_t<scalar_t>* __restrict__ bias_t,
                                             acc_t<scalar_t>* __restrict__ dsg, acc_t<scalar_t>* __restrict__ dsb,
                                             int64_t C, int64_t HW, int64_t L, int64_t chunk, int64_t chunks,
                                             bool vec) {
  using acc = acc_t<scalar_t>;
  const int64_t n = blockIdx.x / chunks, k = blockIdx.x % chunks;
  const int64_t begin = k * chunk, end = begin + chunk < HW ? begin + chunk : HW;
  const int32_t* lp = lab + n * HW;
  for (int64_t i = begin + static_cast<int64_t>(threadIdx.x) * kVec; i < end; i += kThreads * kVec) {
    int l[kVec];
    load_labels(lp, i, end, vec, l);
    acc gs[kVec] = {}, bs[kVec] = {};
    for (int64_t c = 0; c < C; ++c) {
      const int64_t plane = n * C + c;
      const acc m = mean[plane], r = rstd[plane];
      acc d[kVec];
      load_vec_as(dy + plane * HW, i, end, vec, d);
      const acc* wc = weight_t + c * L;
      const acc* bc = bias_t + c * L;
      if (dsg != nullptr) {
        acc xv[kVec];
        load_vec_as(x + plane * HW, i, end, vec, xv);
#pragma unroll
        for (int e = 0; e < kVec; ++e)
          if (l[e] >= 0) gs[e] += d[e] * (xv[e] - m) * r * wc[l[e]];
      }
      if (dsb != nullptr) {
#pragma unroll
        for (int e = 0; e < kVec; ++e)
          if (l[e] >= 0) bs[e] += d[e] * bc[l[e]];
      }
    }
    if (dsg != nullptr) store_vec(dsg + n * HW, i, end, vec, gs);
    if (dsb != nullptr) store_vec(dsb + n * HW, i, end, vec, bs);
  }
}

Tensor class_modulate_cuda(const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& labels,
                           const Tensor& weight, const Tensor& bias, const std::optional<Tensor>& scale_gamma,
                           const std::optional<Tensor>& scale_beta, double offset, int64_t stats_of_x) {
  constexpr const char* op = "class_modulate";
  check_stats_of_x(stats_of_x, op);
  check_class_modulate_args(x, mean, rstd, labels, weight, bias, op);
  const Tensor sg = check_pixel_map(scale_gamma, x, op, "scale_gamma");
  const Tensor sb = check_pixel_map(scale_beta, x, op, "scale_beta");
  const c10::cuda::CUDAGuard guard(x.device());
  const Tensor lab = class_modulate_labels(x, labels, weight, op);  // under the device guard
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), L = weight.size(0);
  const Tensor xc = x.contiguous(), mc = mean.contiguous(), rc = rstd.contiguous();
  const Tensor wc = weight.contiguous(), bc = bias.contiguous();
  Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_class_modulate_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const acc* sgp = sg.defined() ? sg.data_ptr<acc>() : nullptr;
    const acc* sbp = sb.defined() ? sb.data_ptr<acc>() : nullptr;
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const int32_t* lp = lab.data_ptr<int32_t>();
    const int64_t col_bytes = 2 * L * static_cast<int64_t>(sizeof(acc));
    const bool staged = col_bytes <= 2 * kColumnBudget;
    const bool vec = vec_ok(xp, HW) && vec_ok(yp, HW) && vec_ok(lp, HW) && (sgp == nullptr || vec_ok(sgp, HW)) &&
                     (sbp == nullptr || vec_ok(sbp, HW));
    const Chunking ch = chunk_planes(N * C, HW, std::max<int64_t>(kThreads * kVec, 2 * L));
    class_modulate_kernel<scalar_t>
        <<<block_count(N * C * ch.chunks, op), kThreads, staged ? col_bytes : 0, cuda::stream()>>>(
            xp, mc.data_ptr<acc>(), rc.data_ptr<acc>(), lp, wc.data_ptr<acc>(), bc.data_ptr<acc>(), sgp, sbp, yp, C,
            HW, L, ch.chunk, ch.chunks, static_cast<acc>(offset), staged, vec);
    SEMNORM_CUDA_CHECK_LAUNCH();
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> class_modulate_backward_cuda(
    const Tensor& grad_y, const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& labels,
    const Tensor& weight, const Tensor& bias, const std::optional<Tensor>& scale_gamma,
    const std::optional<Tensor>& scale_beta, double offset) {
  constexpr const char* op = "class_modulate_backward";
  check_class_modulate_args(x, mean, rstd, labels, weight, bias, op);
  check_class_modulate_grad(grad_y, x, op);
  const Tensor sg = check_pixel_map(scale_gamma, x, op, "scale_gamma");
  const Tensor sb = check_pixel_map(scale_beta, x, op, "scale_beta");
  const c10::cuda::CUDAGuard guard(x.device());
  const Tensor lab = class_modulate_labels(x, labels, weight, op);  // under the device guard
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), L = weight.size(0);
  const Tensor xc = x.contiguous(), dyc = grad_y.contiguous(), mc = mean.contiguous(), rc = rstd.contiguous();
  const Tensor wc = weight.contiguous(), bc = bias.contiguous();
  const auto opts = mean.options();

  Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor grad_mean = at::empty({N, C}, opts), grad_rstd = at::empty({N, C}, opts);
  Tensor grad_weight = at::empty({L, C}, opts), grad_bias = at::empty({L, C}, opts);
  Tensor grad_sg = sg.defined() ? at::empty({N, x.size(2), x.size(3)}, opts) : at::empty({0}, opts);
  Tensor grad_sb = sb.defined() ? at::empty({N, x.size(2), x.size(3)}, opts) : at::empty({0}, opts);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_class_modulate_backward_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const acc* sgp = sg.defined() ? sg.data_ptr<acc>() : nullptr;
    const acc* sbp = sb.defined() ? sb.data_ptr<acc>() : nullptr;
    const scalar_t* dyp = dyc.data_ptr<scalar_t>();
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    scalar_t* dxp = grad_x.data_ptr<scalar_t>();
    const int32_t* lp = lab.data_ptr<int32_t>();
    const bool pix_vec =
        vec_ok(lp, HW) && (sgp == nullptr || vec_ok(sgp, HW)) && (sbp == nullptr || vec_ok(sbp, HW));
    const bool vec = pix_vec && vec_ok(dyp, HW) && vec_ok(xp, HW) && vec_ok(dxp, HW);

    const int64_t col_bytes = L * static_cast<int64_t>(sizeof(acc));
    const bool staged = col_bytes <= kColumnBudget;
    const TablePlan plan =
        plan_tables<acc>(N * C, HW, 2 * L, C, cuda::deterministic(), staged ? col_bytes : 0);
    Tensor ws = at::zeros({workspace_numel(plan.tl)}, opts);
    Tensor plane_ws = at::empty({N * C * plan.ch.chunks * 2}, opts);
    const int64_t smem = (staged ? col_bytes : 0) + table_smem_bytes<acc>(plan.tl);
    class_modulate_backward_kernel<scalar_t>
        <<<block_count(N * C * plan.ch.chunks, op), kThreads, smem, cuda::stream()>>>(
            dyp, xp, mc.data_ptr<acc>(), rc.data_ptr<acc>(), lp, wc.data_ptr<acc>(), sgp, sbp, dxp, plan.tl,
            ws.data_ptr<acc>(), plane_ws.data_ptr<acc>(), C, HW, L, plan.ch.chunk, static_cast<acc>(offset), staged,
            vec);
    SEMNORM_CUDA_CHECK_LAUNCH();
    class_modulate_bank_finalize_kernel<acc><<<cuda::grid_for(L * C), kThreads, 0, cuda::stream()>>>(
        ws.data_ptr<acc>(), plan.tl, grad_weight.data_ptr<acc>(), grad_bias.data_ptr<acc>(), L, C);
    SEMNORM_CUDA_CHECK_LAUNCH();
    class_modulate_stats_finalize_kernel<acc><<<cuda::grid_for(N * C), kThreads, 0, cuda::stream()>>>(
        plane_ws.data_ptr<acc>(), rc.data_ptr<acc>(), grad_mean.data_ptr<acc>(), grad_rstd.data_ptr<acc>(), N * C,
        plan.ch.chunks);
    SEMNORM_CUDA_CHECK_LAUNCH();

    if (sgp != nullptr || sbp != nullptr) {
      const Tensor wt = wc.t().contiguous(), bt = bc.t().contiguous();  // (C, L), a few KB
      acc* dsg = sgp != nullptr ? grad_sg.data_ptr<acc>() : nullptr;
      acc* dsb = sbp != nullptr ? grad_sb.data_ptr<acc>() : nullptr;
      const bool pvec = vec && (dsg == nullptr || vec_ok(dsg, HW)) && (dsb == nullptr || vec_ok(dsb, HW));
      const Chunking ch = chunk_planes(N, HW);
      class_modulate_pixels_kernel<scalar_t><<<block_count(N * ch.chunks, op), kThreads, 0, cuda::stream()>>>(
          dyp, xp, mc.data_ptr<acc>(), rc.data_ptr<acc>(), lp, wt.data_ptr<acc>(), bt.data_ptr<acc>(), dsg, dsb, C,
          HW, L, ch.chunk, ch.chunks, pvec);
      SEMNORM_CUDA_CHECK_LAUNCH();
    }
  });
  return {grad_x, grad_mean, grad_rstd, grad_weight, grad_bias, grad_sg, grad_sb};
}

}  // namespace

TORCH_LIBRARY_IMPL(semnorm, CUDA, m) {
  m.impl("class_modulate", &class_modulate_cuda);
  m.impl("class_modulate_backward", &class_modulate_backward_cuda);
}

}  // namespace semnorm
