// Norm statistics (channel_moments) and the fused normalize + modulate (normalize_modulate) on the CPU.
//
// channel_moments: per (n, c) plane a two-pass mean / M2 in opmath (the plane is re-read from cache),
// then, for batch statistics, Chan's parallel combination of the N planes of each channel. Never
// E[x^2] - E[x]^2, so large means do not cancel.
// normalize_modulate: y = (x_eff - mean) * rstd * (offset + g) + b in one pass over the planes, with
// g, b dense or SEAN's blend of two branches, and x_eff = x + noise_scale[c] * noise[n, h, w].
// Per-channel reductions over n (noise_scale, blend) go through per-plane partials that each task owns,
// then a second tiny pass sums them per channel: race-free and deterministic.
#include "checks/stats_checks.h"
#include "common.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

namespace semnorm {
namespace {

// Lanes of independent partial sums: lets the compiler vectorize reductions without -ffast-math
// (and makes them slightly more accurate than one running sum).
constexpr int64_t kLanes = 16;

// Calls f(std::integral_constant<bool, b>{}) so inner loops are specialised on optional inputs.
template <typename F>
void dispatch_bool(bool b, F&& f) {
  if (b) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// ---------------------------------------------------------------------------------------------
// channel_moments

template <typename scalar_t, bool NOISE>
void moments_planes(const scalar_t* x, const acc_t<scalar_t>* noise, const acc_t<scalar_t>* scale,
                    acc_t<scalar_t>* mean, acc_t<scalar_t>* m2, int64_t N, int64_t C, int64_t HW) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      const scalar_t* xp = x + nc * HW;
      const acc* zp = NOISE ? noise + n * HW : nullptr;
      const acc s = NOISE ? scale[c] : acc(0);
      const auto xe = [&](int64_t p) {
        acc v = static_cast<acc>(xp[p]);
        if constexpr (NOISE) v += s * zp[p];
        return v;
      };
      const int64_t blocked = HW - HW % kLanes;
      acc lane[kLanes] = {};
      for (int64_t p = 0; p < blocked; p += kLanes)
        for (int64_t j = 0; j < kLanes; ++j) lane[j] += xe(p + j);
      acc sum = 0;
      for (int64_t j = 0; j < kLanes; ++j) sum += lane[j];
      for (int64_t p = blocked; p < HW; ++p) sum += xe(p);
      const acc mu = sum / static_cast<acc>(HW);
      acc lane2[kLanes] = {};
      for (int64_t p = 0; p < blocked; p += kLanes)
        for (int64_t j = 0; j < kLanes; ++j) {
          const acc d = xe(p + j) - mu;
          lane2[j] += d * d;
        }
      acc ss = 0;
      for (int64_t j = 0; j < kLanes; ++j) ss += lane2[j];
      for (int64_t p = blocked; p < HW; ++p) {
        const acc d = xe(p) - mu;
        ss += d * d;
      }
      mean[nc] = mu;
      m2[nc] = ss;
    }
  });
}

// Chan et al.'s parallel combination of the N plane moments of each channel, merged one plane at a
// time (each plane holds HW values), which amounts to
// mean = average of the plane means, M2 = sum of plane M2 + HW * sum (plane mean - mean)^2.
template <typename acc>
void combine_planes(const acc* pmean, const acc* pm2, acc* mean, acc* m2, int64_t N, int64_t C, int64_t HW) {
  at::parallel_for(0, C, 16, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      // Running pairwise merge (exact for any counts; here every plane has HW values).
      acc mu = pmean[c], ss = pm2[c], count = static_cast<acc>(HW);
      for (int64_t n = 1; n < N; ++n) {
        const acc nb = static_cast<acc>(HW), mb = pmean[n * C + c];
        const acc tot = count + nb, delta = mb - mu;
        mu += delta * (nb / tot);
        ss += pm2[n * C + c] + delta * delta * (count * nb / tot);
        count = tot;
      }
      mean[c] = mu;
      m2[c] = ss;
    }
  });
}

std::tuple<Tensor, Tensor> channel_moments_cpu(const Tensor& x, bool per_instance, const std::optional<Tensor>& noise,
                                               const std::optional<Tensor>& noise_scale) {
  constexpr const char* op = "channel_moments";
  check_activation(x, op);
  Tensor nz, ns;  // (no structured bindings: lambdas capture them only from C++20)
  std::tie(nz, ns) = check_noise(noise, noise_scale, x, op);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const Tensor xc = x.contiguous();
  const auto opts = x.options().dtype(opmath_dtype(x.scalar_type()));
  Tensor pmean = at::empty({N, C}, opts), pm2 = at::empty({N, C}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_channel_moments", [&] {
    using acc = acc_t<scalar_t>;
    dispatch_bool(nz.defined(), [&](auto noise_flag) {
      moments_planes<scalar_t, decltype(noise_flag)::value>(
          xc.data_ptr<scalar_t>(), nz.defined() ? nz.data_ptr<acc>() : nullptr,
          ns.defined() ? ns.data_ptr<acc>() : nullptr, pmean.data_ptr<acc>(), pm2.data_ptr<acc>(), N, C, HW);
    });
  });
  if (per_instance) return {pmean, pm2};
  Tensor mean = at::empty({C}, opts), m2 = at::empty({C}, opts);
  AT_DISPATCH_FLOATING_TYPES(opts.dtype().toScalarType(), "semnorm_channel_moments_combine", [&] {
    combine_planes<scalar_t>(pmean.data_ptr<scalar_t>(), pm2.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(),
                             m2.data_ptr<scalar_t>(), N, C, HW);
  });
  return {mean, m2};
}

// grad_x = grad_mean / M + 2 * grad_m2 * (x_eff - mean); per-plane partial sums of grad_x * noise go to
// partial[n, c] (owned by the task of that plane) and are summed over n afterwards.
template <typename scalar_t, bool NOISE>
void moments_backward_planes(const acc_t<scalar_t>* gmean, const acc_t<scalar_t>* gm2, const scalar_t* x,
                             const acc_t<scalar_t>* mean, const acc_t<scalar_t>* noise, const acc_t<scalar_t>* scale,
                             scalar_t* gx, acc_t<scalar_t>* partial, bool per_instance, int64_t N, int64_t C,
                             int64_t HW) {
  using acc = acc_t<scalar_t>;
  const acc inv_count = acc(1) / static_cast<acc>(per_instance ? HW : N * HW);
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, c = nc % C, k = per_instance ? nc : c;
      const acc a = gmean[k] * inv_count, b = acc(2) * gm2[k], mu = mean[k];
      const acc s = NOISE ? scale[c] : acc(0);
      const scalar_t* xp = x + nc * HW;
      const acc* zp = NOISE ? noise + n * HW : nullptr;
      scalar_t* gp = gx + nc * HW;
      if constexpr (NOISE) {
        const int64_t blocked = HW - HW % kLanes;
        acc lane[kLanes] = {};
        for (int64_t p = 0; p < blocked; p += kLanes)
          for (int64_t j = 0; j < kLanes; ++j) {
            const acc g = a + b * (static_cast<acc>(xp[p + j]) + s * zp[p + j] - mu);
            gp[p + j] = static_cast<scalar_t>(g);
            lane[j] += g * zp[p + j];
          }
        acc sum = 0;
        for (int64_t j = 0; j < kLanes; ++j) sum += lane[j];
        for (int64_t p = blocked; p < HW; ++p) {
          const acc g = a + b * (static_cast<acc>(xp[p]) + s * zp[p] - mu);
          gp[p] = static_cast<scalar_t>(g);
          sum += g * zp[p];
        }
        partial[nc] = sum;
      } else {
        for (int64_t p = 0; p < HW; ++p) gp[p] = static_cast<scalar_t>(a + b * (static_cast<acc>(xp[p]) - mu));
      }
    }
  });
}

// out[c] = sum_n partial[n, c] (parallel over channels, each task owns its columns).
template <typename acc>
void sum_over_batch(const acc* partial, acc* out, int64_t N, int64_t C, int64_t stride = 1, int64_t offset = 0) {
  at::parallel_for(0, C, 64, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      acc s = 0;
      for (int64_t n = 0; n < N; ++n) s += partial[(n * C + c) * stride + offset];
      out[c] = s;
    }
  });
}

std::tuple<Tensor, Tensor> channel_moments_backward_cpu(const Tensor& grad_mean, const Tensor& grad_m2, const Tensor& x,
                                                        const Tensor& mean, bool per_instance,
                                                        const std::optional<Tensor>& noise,
                                                        const std::optional<Tensor>& noise_scale) {
  constexpr const char* op = "channel_moments_backward";
  check_activation(x, op);
  const Tensor gmean = check_moment(grad_mean, x, per_instance, op, "grad_mean");
  const Tensor gm2 = check_moment(grad_m2, x, per_instance, op, "grad_m2");
  const Tensor mu = check_moment(mean, x, per_instance, op, "mean");
  Tensor nz, ns;  // (no structured bindings: lambdas capture them only from C++20)
  std::tie(nz, ns) = check_noise(noise, noise_scale, x, op);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const Tensor xc = x.contiguous();
  const auto opts = x.options().dtype(opmath_dtype(x.scalar_type()));
  Tensor grad_x = at::empty({N, C, x.size(2), x.size(3)}, x.options());
  Tensor partial = nz.defined() ? at::empty({N, C}, opts) : Tensor();
  Tensor grad_scale = at::empty({nz.defined() ? C : 0}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_channel_moments_backward", [&] {
    using acc = acc_t<scalar_t>;
    dispatch_bool(nz.defined(), [&](auto noise_flag) {
      constexpr bool NOISE = decltype(noise_flag)::value;
      moments_backward_planes<scalar_t, NOISE>(
          gmean.data_ptr<acc>(), gm2.data_ptr<acc>(), xc.data_ptr<scalar_t>(), mu.data_ptr<acc>(),
          NOISE ? nz.data_ptr<acc>() : nullptr, NOISE ? ns.data_ptr<acc>() : nullptr, grad_x.data_ptr<scalar_t>(),
          NOISE ? partial.data_ptr<acc>() : nullptr, per_instance, N, C, HW);
      if constexpr (NOISE) sum_over_batch<acc>(partial.data_ptr<acc>(), grad_scale.data_ptr<acc>(), N, C);
    });
  });
  return {grad_x, grad_scale};
}

// ---------------------------------------------------------------------------------------------
// normalize_modulate

template <typename scalar_t>
struct ModulateArgs {
  using acc = acc_t<scalar_t>;
  const scalar_t* x;
  const acc* mean;
  const acc* rstd;
  const scalar_t* gamma;
  const scalar_t* beta;
  const scalar_t* gamma2;
  const scalar_t* beta2;
  acc blend_g, blend_b;
  const acc* noise;
  const acc* scale;
  acc offset;
  int64_t N, C, HW;
};

template <typename scalar_t, bool BLEND, bool NOISE>
void modulate_forward_planes(const ModulateArgs<scalar_t>& A, scalar_t* y) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, A.N * A.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / A.C, c = nc % A.C, base = nc * A.HW;
      const acc mu = A.mean[nc], r = A.rstd[nc], off = A.offset, bg = A.blend_g, bb = A.blend_b;
      const acc s = NOISE ? A.scale[c] : acc(0);
      const scalar_t *xp = A.x + base, *gp = A.gamma + base, *bp = A.beta + base;
      const scalar_t* g2p = BLEND ? A.gamma2 + base : nullptr;
      const scalar_t* b2p = BLEND ? A.beta2 + base : nullptr;
      const acc* zp = NOISE ? A.noise + n * A.HW : nullptr;
      scalar_t* yp = y + base;
      for (int64_t p = 0; p < A.HW; ++p) {
        acc xe = static_cast<acc>(xp[p]);
        if constexpr (NOISE) xe += s * zp[p];
        acc g = static_cast<acc>(gp[p]), b = static_cast<acc>(bp[p]);
        if constexpr (BLEND) {
          g = bg * g + (acc(1) - bg) * static_cast<acc>(g2p[p]);
          b = bb * b + (acc(1) - bb) * static_cast<acc>(b2p[p]);
        }
        yp[p] = static_cast<scalar_t>((xe - mu) * r * (off + g) + b);
      }
    }
  });
}

template <typename scalar_t>
struct ModulateGrads {
  using acc = acc_t<scalar_t>;
  scalar_t* x;
  acc* mean;
  acc* rstd;
  scalar_t* gamma;
  scalar_t* beta;
  scalar_t* gamma2;
  scalar_t* beta2;
  acc* partial;  // (N*C, 3): blend[0], blend[1], noise_scale partial sums of each plane
};

// One (n, c) plane of the backward. `#pragma omp simd` with a reduction clause lets the compiler
// vectorize the five sums (a plain loop would keep them serial without -ffast-math); the outputs are
// fresh tensors, hence __restrict__. sums: dy*(off+g), dy*(off+g)*(x_eff-mean), blend[0], blend[1],
// noise_scale partials.
template <typename scalar_t, bool BLEND, bool NOISE>
void modulate_backward_plane(const scalar_t* __restrict__ dyp, const scalar_t* __restrict__ xp,
                             const scalar_t* __restrict__ gp, const scalar_t* __restrict__ bp,
                             const scalar_t* __restrict__ g2p, const scalar_t* __restrict__ b2p,
                             const acc_t<scalar_t>* __restrict__ zp, scalar_t* __restrict__ gxp,
                             scalar_t* __restrict__ ggp, scalar_t* __restrict__ gbp, scalar_t* __restrict__ gg2p,
                             scalar_t* __restrict__ gb2p, acc_t<scalar_t> mu, acc_t<scalar_t> r,
                             acc_t<scalar_t> off, acc_t<scalar_t> bg, acc_t<scalar_t> bb, acc_t<scalar_t> s,
                             int64_t HW, acc_t<scalar_t>* sums) {
  using acc = acc_t<scalar_t>;
  acc sdg = 0, sdgx = 0, sbg = 0, sbb = 0, sns = 0;
#pragma omp simd reduction(+ : sdg, sdgx, sbg, sbb, sns)
  for (int64_t p = 0; p < HW; ++p) {
    acc xe = static_cast<acc>(xp[p]);
    if constexpr (NOISE) xe += s * zp[p];
    const acc d = static_cast<acc>(dyp[p]), xc = xe - mu;
    const acc g1 = static_cast<acc>(gp[p]);
    acc g = g1, g2 = 0;
    if constexpr (BLEND) {
      g2 = static_cast<acc>(g2p[p]);
      g = bg * g1 + (acc(1) - bg) * g2;
    }
    const acc dg = d * (off + g), gx = dg * r, dxhat = d * xc * r;
    gxp[p] = static_cast<scalar_t>(gx);
    sdg += dg;
    sdgx += dg * xc;
    if constexpr (BLEND) {
      ggp[p] = static_cast<scalar_t>(bg * dxhat);
      gg2p[p] = static_cast<scalar_t>((acc(1) - bg) * dxhat);
      gbp[p] = static_cast<scalar_t>(bb * d);
      gb2p[p] = static_cast<scalar_t>((acc(1) - bb) * d);
      sbg += dxhat * (g1 - g2);
      sbb += d * (static_cast<acc>(bp[p]) - static_cast<acc>(b2p[p]));
    } else {
      ggp[p] = static_cast<scalar_t>(dxhat);  // grad_beta is grad_y itself: not written (semnorm/ops/stats.py)
    }
    if constexpr (NOISE) sns += gx * zp[p];
  }
  sums[0] = sdg;
  sums[1] = sdgx;
  sums[2] = sbg;
  sums[3] = sbb;
  sums[4] = sns;
}

template <typename scalar_t, bool BLEND, bool NOISE>
void modulate_backward_planes(const scalar_t* dy, const ModulateArgs<scalar_t>& A, const ModulateGrads<scalar_t>& G) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, A.N * A.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / A.C, c = nc % A.C, base = nc * A.HW;
      const acc r = A.rstd[nc];
      acc sums[5];
      modulate_backward_plane<scalar_t, BLEND, NOISE>(
          dy + base, A.x + base, A.gamma + base, A.beta + base, BLEND ? A.gamma2 + base : nullptr,
          BLEND ? A.beta2 + base : nullptr, NOISE ? A.noise + n * A.HW : nullptr, G.x + base, G.gamma + base,
          G.beta + base, BLEND ? G.gamma2 + base : nullptr, BLEND ? G.beta2 + base : nullptr, A.mean[nc], r,
          A.offset, A.blend_g, A.blend_b, NOISE ? A.scale[c] : acc(0), A.HW, sums);
      G.mean[nc] = -sums[0] * r;
      G.rstd[nc] = sums[1];
      G.partial[nc * 3 + 0] = sums[2];
      G.partial[nc * 3 + 1] = sums[3];
      G.partial[nc * 3 + 2] = sums[4];
    }
  });
}

template <typename scalar_t>
ModulateArgs<scalar_t> modulate_args(const ModulateInputs& in, const Tensor& mean, const Tensor& rstd, double offset) {
  using acc = acc_t<scalar_t>;
  ModulateArgs<scalar_t> A;
  A.x = in.x.data_ptr<scalar_t>();
  A.mean = mean.data_ptr<acc>();
  A.rstd = rstd.data_ptr<acc>();
  A.gamma = in.gamma.data_ptr<scalar_t>();
  A.beta = in.beta.data_ptr<scalar_t>();
  A.gamma2 = in.gamma2.defined() ? in.gamma2.data_ptr<scalar_t>() : nullptr;
  A.beta2 = in.beta2.defined() ? in.beta2.data_ptr<scalar_t>() : nullptr;
  A.blend_g = in.blend.defined() ? in.blend.data_ptr<acc>()[0] : acc(1);
  A.blend_b = in.blend.defined() ? in.blend.data_ptr<acc>()[1] : acc(1);
  A.noise = in.noise.defined() ? in.noise.data_ptr<acc>() : nullptr;
  A.scale = in.scale.defined() ? in.scale.data_ptr<acc>() : nullptr;
  A.offset = static_cast<acc>(offset);
  A.N = in.x.size(0);
  A.C = in.x.size(1);
  A.HW = in.x.size(2) * in.x.size(3);
  return A;
}

Tensor normalize_modulate_cpu(const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& gamma,
                              const Tensor& beta, const std::optional<Tensor>& gamma2,
                              const std::optional<Tensor>& beta2, const std::optional<Tensor>& blend,
                              const std::optional<Tensor>& noise, const std::optional<Tensor>& noise_scale,
                              double offset, int64_t stats_of_x) {
  constexpr const char* op = "normalize_modulate";
  check_stats_of_x(stats_of_x, op);
  const ModulateInputs in = check_modulate(x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, op);
  const Tensor mc = mean.contiguous(), rc = rstd.contiguous();
  Tensor y = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_normalize_modulate", [&] {
    const auto A = modulate_args<scalar_t>(in, mc, rc, offset);
    dispatch_bool(in.blend.defined(), [&](auto blend_flag) {
      dispatch_bool(in.noise.defined(), [&](auto noise_flag) {
        modulate_forward_planes<scalar_t, decltype(blend_flag)::value, decltype(noise_flag)::value>(
            A, y.data_ptr<scalar_t>());
      });
    });
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> normalize_modulate_backward_cpu(
    const Tensor& grad_y, const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& gamma,
    const Tensor& beta, const std::optional<Tensor>& gamma2, const std::optional<Tensor>& beta2,
    const std::optional<Tensor>& blend, const std::optional<Tensor>& noise, const std::optional<Tensor>& noise_scale,
    double offset) {
  constexpr const char* op = "normalize_modulate_backward";
  const ModulateInputs in = check_modulate(x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, op);
  const Tensor dy = check_dense(grad_y, x, op, "grad_y");
  const Tensor mc = mean.contiguous(), rc = rstd.contiguous();
  const int64_t N = x.size(0), C = x.size(1);
  const bool has_blend = in.blend.defined(), has_noise = in.noise.defined();
  const auto xopts = x.options();
  const auto opts = xopts.dtype(opmath_dtype(x.scalar_type()));
  Tensor gx = at::empty(x.sizes(), xopts), gmean = at::empty({N, C}, opts), grstd = at::empty({N, C}, opts);
  // without a blend grad_beta equals grad_y: an empty output, and the autograd formula passes grad_y on
  Tensor ggamma = at::empty(x.sizes(), xopts), gbeta = has_blend ? at::empty(x.sizes(), xopts) : at::empty({0}, xopts);
  Tensor ggamma2 = has_blend ? at::empty(x.sizes(), xopts) : at::empty({0}, xopts);
  Tensor gbeta2 = has_blend ? at::empty(x.sizes(), xopts) : at::empty({0}, xopts);
  Tensor gblend = at::empty({has_blend ? 2 : 0}, opts), gscale = at::empty({has_noise ? C : 0}, opts);
  Tensor partial = at::empty({N * C, 3}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_normalize_modulate_backward", [&] {
    using acc = acc_t<scalar_t>;
    const auto A = modulate_args<scalar_t>(in, mc, rc, offset);
    ModulateGrads<scalar_t> G;
    G.x = gx.data_ptr<scalar_t>();
    G.mean = gmean.data_ptr<acc>();
    G.rstd = grstd.data_ptr<acc>();
    G.gamma = ggamma.data_ptr<scalar_t>();
    G.beta = has_blend ? gbeta.data_ptr<scalar_t>() : nullptr;
    G.gamma2 = has_blend ? ggamma2.data_ptr<scalar_t>() : nullptr;
    G.beta2 = has_blend ? gbeta2.data_ptr<scalar_t>() : nullptr;
    G.partial = partial.data_ptr<acc>();
    dispatch_bool(has_blend, [&](auto blend_flag) {
      dispatch_bool(has_noise, [&](auto noise_flag) {
        modulate_backward_planes<scalar_t, decltype(blend_flag)::value, decltype(noise_flag)::value>(
            dy.data_ptr<scalar_t>(), A, G);
      });
    });
    const acc* part = partial.data_ptr<acc>();
    if (has_blend) {
      acc sg = 0, sb = 0;  // N*C values each: a serial sum is negligible next to the planes
      for (int64_t nc = 0; nc < N * C; ++nc) {
        sg += part[nc * 3 + 0];
        sb += part[nc * 3 + 1];
      }
      gblend.data_ptr<acc>()[0] = sg;
      gblend.data_ptr<acc>()[1] = sb;
    }
    if (has_noise) sum_over_batch<acc>(part, gscale.data_ptr<acc>(), N, C, 3, 2);
  });
  return {gx, gmean, grstd, ggamma, gbeta, ggamma2, gbeta2, gblend, gscale};
}

}  // namespace

TORCH_LIBRARY_IMPL(semnorm, CPU, m) {
  m.impl("channel_moments", &channel_moments_cpu);
  m.impl("channel_moments_backward", &channel_moments_backward_cpu);
  m.impl("normalize_modulate", &normalize_modulate_cpu);
  m.impl("normalize_modulate_backward", &normalize_modulate_backward_cpu);
}

}  // namespace semnorm
