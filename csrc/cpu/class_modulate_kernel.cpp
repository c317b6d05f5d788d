// CLADE guided sampling fused with normalize + modulate on the CPU (SPEC sections 3 and 4):
//   y = (x - mean[n,c]) * rstd[n,c] * (offset + weight[l,c] * sg[n,p]) + bias[l,c] * sb[n,p]
// with l the label at pixel p (sampled to (H, W) in the kernel) and sg / sb the optional ICPE
// factors. No dense gamma/beta and no one-hot: the forward reads the (L, C) bank through a small
// per-channel table, the backward scatter-adds into private per-class buffers.
#include "checks/class_modulate_checks.h"
#include "common.h"
#include "cpu/label_runs.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

namespace semnorm {
namespace {

constexpr int64_t kPixelBlock = 2048;

// Forward: one (n, c) plane per step. The columns weight[:, c], bias[:, c] are copied into
// contiguous tables so the pixel loop is a contiguous read of x plus an L1 table lookup.
template <typename scalar_t, bool HAS_SG, bool HAS_SB>
void forward_impl(const scalar_t* x, const acc_t<scalar_t>* mean, const acc_t<scalar_t>* rstd, const int32_t* lab,
                  const LabelRuns& runs, const acc_t<scalar_t>* weight, const acc_t<scalar_t>* bias, const acc_t<scalar_t>* sg,
                  const acc_t<scalar_t>* sb, scalar_t* y, int64_t N, int64_t C, int64_t HW, int64_t L, double offset) {
  using acc = acc_t<scalar_t>;
  const acc off = static_cast<acc>(offset);
  // Grain 1: every plane is HW elements of work, and there are few planes relative to HW.
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> wt(L), bt(L), gain(L);
    int64_t cur_c = -1;
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      if (c != cur_c) {
        for (int64_t l = 0; l < L; ++l) {
          wt[l] = weight[l * C + c];
          bt[l] = bias[l * C + c];
        }
        cur_c = c;
      }
      const acc m = mean[nc], r = rstd[nc];
      const scalar_t* xp = x + nc * HW;
      const int32_t* lp = lab + n * HW;
      const acc* sgp = HAS_SG ? sg + n * HW : nullptr;
      const acc* sbp = HAS_SB ? sb + n * HW : nullptr;
      scalar_t* yp = y + nc * HW;
      const acc* w = wt.data();
      const acc* b = bt.data();
      if (!HAS_SG) {
        // rstd * gamma_eff depends on the label only: fold it into a per-plane table (L entries).
        // Kept as (x - m) * A rather than x * A - m * A so large means do not cancel.
        for (int64_t l = 0; l < L; ++l) gain[l] = r * (off + w[l]);
        // Walk run by run (label_runs.h): within a run the gain and shift are constants.
        for (const LabelRun* run = runs.begin(n); run != runs.end(n); ++run) {
          const int32_t l = run->label;
          const int64_t p = run->begin, q = run->end;
          const acc A = gain[l], B = b[l];
          if (HAS_SB) {
            for (int64_t i = p; i < q; ++i) yp[i] = static_cast<scalar_t>((static_cast<acc>(xp[i]) - m) * A + B * sbp[i]);
          } else {
            for (int64_t i = p; i < q; ++i) yp[i] = static_cast<scalar_t>((static_cast<acc>(xp[i]) - m) * A + B);
          }
        }
      } else {
        for (int64_t p = 0; p < HW; ++p) {
          const int32_t l = lp[p];
          const acc beta = HAS_SB ? b[l] * sbp[p] : b[l];
          yp[p] = static_cast<scalar_t>((static_cast<acc>(xp[p]) - m) * r * (off + w[l] * sgp[p]) + beta);
        }
      }
    }
  });
}

// Backward, channel pass: one channel c per step. The step owns column c of grad_weight and
// grad_bias (accumulated in private length-L buffers over every n and pixel, so no races) and
// computes grad_x, grad_mean[:, c], grad_rstd[:, c] in the same read of grad_y and x.
template <typename scalar_t, bool HAS_SG, bool HAS_SB>
void backward_channels_impl(const scalar_t* dy, const scalar_t* x, const acc_t<scalar_t>* mean,
                            const acc_t<scalar_t>* rstd, const int32_t* lab, const LabelRuns& runs,
                            const acc_t<scalar_t>* weight,
                            const acc_t<scalar_t>* sg, const acc_t<scalar_t>* sb, scalar_t* dx,
                            acc_t<scalar_t>* dmean, acc_t<scalar_t>* drstd, acc_t<scalar_t>* dweight,
                            acc_t<scalar_t>* dbias, int64_t N, int64_t C, int64_t HW, int64_t L, double offset) {
  using acc = acc_t<scalar_t>;
  const acc off = static_cast<acc>(offset);
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> wt(L), gw(L), gb(L);
    for (int64_t c = begin; c < end; ++c) {
      for (int64_t l = 0; l < L; ++l) wt[l] = weight[l * C + c];
      std::fill(gw.begin(), gw.end(), acc(0));
      std::fill(gb.begin(), gb.end(), acc(0));
      const acc* w = wt.data();
      acc* gwp = gw.data();
      acc* gbp = gb.data();
      for (int64_t n = 0; n < N; ++n) {
        const int64_t nc = n * C + c;
        const acc m = mean[nc], r = rstd[nc];
        const scalar_t* dyp = dy + nc * HW;
        const scalar_t* xp = x + nc * HW;
        scalar_t* dxp = dx + nc * HW;
        const int32_t* lp = lab + n * HW;
        const acc* sgp = HAS_SG ? sg + n * HW : nullptr;
        const acc* sbp = HAS_SB ? sb + n * HW : nullptr;
        acc sum_dyg = 0, sum_dygxm = 0;
        if (!HAS_SG) {
          // gamma_eff is constant within a run of equal labels: per run, two sums (dy and dy * xm)
          // give every reduction, accumulated in kSumLanes independent partial sums so the loop
          // vectorizes; random maps degrade to runs of one pixel.
          for (const LabelRun* run = runs.begin(n); run != runs.end(n); ++run) {
            const int32_t l = run->label;
            const int64_t p = run->begin, q = run->end;
            const acc g = off + w[l], gr = g * r;
            if (q - p < kSumLanes) {  // short run (fragmented map): plain per-pixel accumulation
              for (int64_t i = p; i < q; ++i) {
                const acc d = static_cast<acc>(dyp[i]);
                const acc dxm = d * (static_cast<acc>(xp[i]) - m);
                dxp[i] = static_cast<scalar_t>(d * gr);
                sum_dyg += g * d;
                sum_dygxm += g * dxm;
                gwp[l] += dxm * r;
                gbp[l] += HAS_SB ? d * sbp[i] : d;
              }
              continue;
            }
            acc sd[kSumLanes] = {}, sdx[kSumLanes] = {}, sdb[kSumLanes] = {};
            int64_t i = p;
            for (; i + kSumLanes <= q; i += kSumLanes) {
              for (int j = 0; j < kSumLanes; ++j) {
                const acc d = static_cast<acc>(dyp[i + j]);
                dxp[i + j] = static_cast<scalar_t>(d * gr);
                sd[j] += d;
                sdx[j] += d * (static_cast<acc>(xp[i + j]) - m);
                if (HAS_SB) sdb[j] += d * sbp[i + j];
              }
            }
            for (; i < q; ++i) {
              const acc d = static_cast<acc>(dyp[i]);
              dxp[i] = static_cast<scalar_t>(d * gr);
              sd[0] += d;
              sdx[0] += d * (static_cast<acc>(xp[i]) - m);
              if (HAS_SB) sdb[0] += d * sbp[i];
            }
            acc run_d = 0, run_dx = 0, run_db = 0;
            for (int j = 0; j < kSumLanes; ++j) {
              run_d += sd[j];
              run_dx += sdx[j];
              run_db += sdb[j];
            }
            sum_dyg += g * run_d;
            sum_dygxm += g * run_dx;
            gwp[l] += run_dx * r;
            gbp[l] += HAS_SB ? run_db : run_d;
          }
        } else {
          for (int64_t p = 0; p < HW; ++p) {
            const int32_t l = lp[p];
            const acc d = static_cast<acc>(dyp[p]);
            const acc xm = static_cast<acc>(xp[p]) - m;
            const acc s = sgp[p];
            const acc dg = d * (off + w[l] * s);  // dy * gamma_eff
            dxp[p] = static_cast<scalar_t>(dg * r);
            sum_dyg += dg;
            sum_dygxm += dg * xm;
            gwp[l] += d * xm * r * s;  // dy * xhat * sg
            gbp[l] += HAS_SB ? d * sbp[p] : d;
          }
        }
        dmean[nc] = -sum_dyg * r;
        drstd[nc] = sum_dygxm;
      }
      for (int64_t l = 0; l < L; ++l) {
        dweight[l * C + c] = gw[l];
        dbias[l * C + c] = gb[l];
      }
    }
  });
}

// Backward, pixel pass (only with ICPE factors): grad_sg[n, p] = sum_c dy * xhat * weight[l, c] and
// grad_sb[n, p] = sum_c dy * bias[l, c], reductions over channels, so parallel over (n, pixel block)
// with the block's sums in private buffers. weight_t / bias_t are the banks transposed to (C, L) so
// each channel's column is contiguous.
template <typename scalar_t>
void backward_pixels_impl(const scalar_t* dy, const scalar_t* x, const acc_t<scalar_t>* mean,
                          const acc_t<scalar_t>* rstd, const int32_t* lab, const acc_t<scalar_t>* weight_t,
                          const acc_t<scalar_t>* bias_t, acc_t<scalar_t>* dsg, acc_t<scalar_t>* dsb, int64_t N,
                          int64_t C, int64_t HW, int64_t L) {
  using acc = acc_t<scalar_t>;
  const int64_t blocks = (HW + kPixelBlock - 1) / kPixelBlock;
  at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> sg_sum(kPixelBlock), sb_sum(kPixelBlock);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, p0 = (task % blocks) * kPixelBlock;
      const int64_t len = std::min(kPixelBlock, HW - p0);
      std::fill(sg_sum.begin(), sg_sum.begin() + len, acc(0));
      std::fill(sb_sum.begin(), sb_sum.begin() + len, acc(0));
      const int32_t* lp = lab + n * HW + p0;
      for (int64_t c = 0; c < C; ++c) {
        const int64_t nc = n * C + c;
        const acc m = mean[nc], r = rstd[nc];
        const scalar_t* dyp = dy + nc * HW + p0;
        const scalar_t* xp = x + nc * HW + p0;
        const acc* w = weight_t + c * L;
        const acc* b = bias_t + c * L;
        if (dsg != nullptr) {
          for (int64_t i = 0; i < len; ++i)
            sg_sum[i] += static_cast<acc>(dyp[i]) * (static_cast<acc>(xp[i]) - m) * r * w[lp[i]];
        }
        if (dsb != nullptr) {
          for (int64_t i = 0; i < len; ++i) sb_sum[i] += static_cast<acc>(dyp[i]) * b[lp[i]];
        }
      }
      if (dsg != nullptr) std::copy(sg_sum.begin(), sg_sum.begin() + len, dsg + n * HW + p0);
      if (dsb != nullptr) std::copy(sb_sum.begin(), sb_sum.begin() + len, dsb + n * HW + p0);
    }
  });
}

Tensor class_modulate_cpu(const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& labels,
                          const Tensor& weight, const Tensor& bias, const std::optional<Tensor>& scale_gamma,
                          const std::optional<Tensor>& scale_beta, double offset, int64_t stats_of_x) {
  constexpr const char* op = "class_modulate";
  check_stats_of_x(stats_of_x, op);
  check_class_modulate_args(x, mean, rstd, labels, weight, bias, op);
  const Tensor lab = class_modulate_labels(x, labels, weight, op);
  const Tensor sg = check_pixel_map(scale_gamma, x, op, "scale_gamma");
  const Tensor sb = check_pixel_map(scale_beta, x, op, "scale_beta");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), L = weight.size(0);
  const Tensor xc = x.contiguous(), mc = mean.contiguous(), rc = rstd.contiguous();
  const Tensor wc = weight.contiguous(), bc = bias.contiguous();
  const LabelRuns runs(lab.data_ptr<int32_t>(), N, HW);
  Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_class_modulate", [&] {
    using acc = acc_t<scalar_t>;
    const acc* sgp = sg.defined() ? sg.data_ptr<acc>() : nullptr;
    const acc* sbp = sb.defined() ? sb.data_ptr<acc>() : nullptr;
    const auto run = [&](auto has_sg, auto has_sb) {
      forward_impl<scalar_t, decltype(has_sg)::value, decltype(has_sb)::value>(
          xc.data_ptr<scalar_t>(), mc.data_ptr<acc>(), rc.data_ptr<acc>(), lab.data_ptr<int32_t>(), runs,
          wc.data_ptr<acc>(), bc.data_ptr<acc>(), sgp, sbp, y.data_ptr<scalar_t>(), N, C, HW, L, offset);
    };
    if (sgp && sbp) run(std::true_type{}, std::true_type{});
    else if (sgp) run(std::true_type{}, std::false_type{});
    else if (sbp) run(std::false_type{}, std::true_type{});
    else run(std::false_type{}, std::false_type{});
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> class_modulate_backward_cpu(
    const Tensor& grad_y, const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& labels,
    const Tensor& weight, const Tensor& bias, const std::optional<Tensor>& scale_gamma,
    const std::optional<Tensor>& scale_beta, double offset) {
  constexpr const char* op = "class_modulate_backward";
  check_class_modulate_args(x, mean, rstd, labels, weight, bias, op);
  const Tensor lab = class_modulate_labels(x, labels, weight, op);
  check_class_modulate_grad(grad_y, x, op);
  const Tensor sg = check_pixel_map(scale_gamma, x, op, "scale_gamma");
  const Tensor sb = check_pixel_map(scale_beta, x, op, "scale_beta");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), L = weight.size(0);
  const Tensor xc = x.contiguous(), dyc = grad_y.contiguous(), mc = mean.contiguous(), rc = rstd.contiguous();
  const Tensor wc = weight.contiguous(), bc = bias.contiguous();
  const auto opts = mean.options();

  const LabelRuns runs(lab.data_ptr<int32_t>(), N, HW);
  Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor grad_mean = at::empty({N, C}, opts), grad_rstd = at::empty({N, C}, opts);
  Tensor grad_weight = at::empty({L, C}, opts), grad_bias = at::empty({L, C}, opts);
  Tensor grad_sg = sg.defined() ? at::empty({N, x.size(2), x.size(3)}, opts) : at::empty({0}, opts);
  Tensor grad_sb = sb.defined() ? at::empty({N, x.size(2), x.size(3)}, opts) : at::empty({0}, opts);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_class_modulate_backward", [&] {
    using acc = acc_t<scalar_t>;
    const acc* sgp = sg.defined() ? sg.data_ptr<acc>() : nullptr;
    const acc* sbp = sb.defined() ? sb.data_ptr<acc>() : nullptr;
    const auto run = [&](auto has_sg, auto has_sb) {
      backward_channels_impl<scalar_t, decltype(has_sg)::value, decltype(has_sb)::value>(
          dyc.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), mc.data_ptr<acc>(), rc.data_ptr<acc>(),
          lab.data_ptr<int32_t>(), runs, wc.data_ptr<acc>(), sgp, sbp, grad_x.data_ptr<scalar_t>(),
          grad_mean.data_ptr<acc>(), grad_rstd.data_ptr<acc>(), grad_weight.data_ptr<acc>(),
          grad_bias.data_ptr<acc>(), N, C, HW, L, offset);
    };
    if (sgp && sbp) run(std::true_type{}, std::true_type{});
    else if (sgp) run(std::true_type{}, std::false_type{});
    else if (sbp) run(std::false_type{}, std::true_type{});
    else run(std::false_type{}, std::false_type{});

    if (sgp || sbp) {
      const Tensor wt = wc.t().contiguous(), bt = bc.t().contiguous();  // (C, L), a few KB
      backward_pixels_impl<scalar_t>(dyc.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), mc.data_ptr<acc>(),
                                     rc.data_ptr<acc>(), lab.data_ptr<int32_t>(), wt.data_ptr<acc>(),
                                     bt.data_ptr<acc>(), sgp ? grad_sg.data_ptr<acc>() : nullptr,
                                     sbp ? grad_sb.data_ptr<acc>() : nullptr, N, C, HW, L);
    }
  });
  return {grad_x, grad_mean, grad_rstd, grad_weight, grad_bias, grad_sg, grad_sb};
}

}  // namespace

TORCH_LIBRARY_IMPL(semnorm, CPU, m) {
  m.impl("class_modulate", &class_modulate_cpu);
  m.impl("class_modulate_backward", &class_modulate_backward_cpu);
}

}  // namespace semnorm
