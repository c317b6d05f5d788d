// SC-GAN's semantic ops on the CPU: semantic modulate (SCN) and candidate combine (SCC).
//
// Both mix K per-pixel "semantic vectors" (the softmax of the semantic router, K small) into a
// per-channel quantity: SCN mixes the rows of a (K, 2C) bank into gamma / beta and applies them to the
// normalized activations, SCC mixes K candidate feature maps. No dense gamma / beta is ever built:
// every kernel works on blocks of kBlock pixels with small float accumulators that live in L1.
#include "checks/semantic_checks.h"
#include "common.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace semnorm {
namespace {

// Pixels per block: the K x kBlock accumulators of a task stay in L1 for the typical K <= 16.
constexpr int64_t kBlock = 256;

// ---- SCN

// Vector counts up to kMaxFixedK are compiled with K fixed: the loops over the K vectors unroll, so
// each pixel's K vector values, gamma and beta stay in registers and the pixel loop vectorizes with no
// per-pixel scratch arrays (SC-GAN's SCN uses K = 4). A larger K (FixedK = 0) takes the block path:
// K read at run time, the mixes built one vector at a time in L1 block buffers.
constexpr int kMaxFixedK = 8;

// f(std::integral_constant<int, K>) for 1 <= K <= kMaxFixedK, else f(std::integral_constant<int, 0>).
template <typename F>
inline void with_fixed_k(int64_t K, F&& f) {
  switch (K) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    case 8: return f(std::integral_constant<int, 8>{});
    default: return f(std::integral_constant<int, 0>{});
  }
}
static_assert(kMaxFixedK == 8, "with_fixed_k lists every fixed K");

// Independent partial sums per reduction in the fixed-K backward: a float reduction vectorizes only
// when its additions are spread over lanes (no -ffast-math reassociation); 4 lanes keep the 2K + 2
// partial sums of K = 4 in registers.
constexpr int kFixedLanes = 4;

// Channel c's bank columns for the fixed-K kernels: wg[k] = bank[k, c] (gamma), wb[k] = bank[k, C + c] (beta).
template <int K, typename acc>
inline void bank_columns(const acc* bank, int64_t C, int64_t c, acc* wg, acc* wb) {
  for (int k = 0; k < K; ++k) wg[k] = bank[k * 2 * C + c], wb[k] = bank[k * 2 * C + C + c];
}

// g[j] = offset + sum_k v_k[j] * bg[k] for the pixels [0, len) of a block; v_k = v + k * HW.
template <typename scalar_t, typename acc>
inline void mix_block(const scalar_t* v, int64_t HW, int64_t K, const acc* coef, int64_t stride, acc init,
                      int64_t len, acc* out) {
  for (int64_t j = 0; j < len; ++j) out[j] = init;
  for (int64_t k = 0; k < K; ++k) {
    const scalar_t* vk = v + k * HW;
    const acc w = coef[k * stride];
    for (int64_t j = 0; j < len; ++j) out[j] += static_cast<acc>(vk[j]) * w;
  }
}

// One (n, c) plane with K fixed: y = (x - mean) * rstd * (offset + sum_k v_k wg_k) + sum_k v_k wb_k.
template <int K, typename scalar_t, typename acc>
inline void modulate_plane_fixed(const scalar_t* __restrict x, const scalar_t* __restrict v, const acc* wg,
                                 const acc* wb, acc offset, acc m, acc r, int64_t HW, scalar_t* __restrict y) {
  for (int64_t p = 0; p < HW; ++p) {
    acc g = offset, b = 0;
    for (int k = 0; k < K; ++k) {
      const acc vk = static_cast<acc>(v[k * HW + p]);
      g += vk * wg[k];
      b += vk * wb[k];
    }
    y[p] = static_cast<scalar_t>((static_cast<acc>(x[p]) - m) * r * g + b);
  }
}

// Forward, parallel over (n, c) planes: gamma and beta of channel c from the K vector rows and the
// bank columns c and C + c, applied in one fused normalize + modulate pass.
template <int FixedK, typename scalar_t>
void semantic_modulate_cpu_impl(const scalar_t* x, const acc_t<scalar_t>* mean, const acc_t<scalar_t>* rstd,
                                const scalar_t* v, const acc_t<scalar_t>* bank, scalar_t* y, int64_t N, int64_t C,
                                int64_t HW, int64_t K, double offset) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    acc g[kBlock], b[kBlock];
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      const acc m = mean[nc], r = rstd[nc];
      const scalar_t* xp = x + nc * HW;
      const scalar_t* vn = v + n * K * HW;
      scalar_t* yp = y + nc * HW;
      if constexpr (FixedK > 0) {
        acc wg[FixedK], wb[FixedK];
        bank_columns<FixedK>(bank, C, c, wg, wb);
        modulate_plane_fixed<FixedK>(xp, vn, wg, wb, static_cast<acc>(offset), m, r, HW, yp);
        continue;
      }
      for (int64_t p0 = 0; p0 < HW; p0 += kBlock) {
        const int64_t len = std::min(kBlock, HW - p0);
        mix_block(vn + p0, HW, K, bank + c, 2 * C, static_cast<acc>(offset), len, g);
        mix_block(vn + p0, HW, K, bank + C + c, 2 * C, acc(0), len, b);
        for (int64_t j = 0; j < len; ++j)
          yp[p0 + j] = static_cast<scalar_t>((static_cast<acc>(xp[p0 + j]) - m) * r * g[j] + b[j]);
      }
    }
  });
}

// The sums of one (n, c) plane that the backward's channel pass needs, K fixed: grad_x (written),
// sums[0] = sum dy * g, sums[1] = sum dy * g * (x - mean), sums[2 + k] = sum dy * xhat * v_k and
// sums[2 + K + k] = sum dy * v_k, with g = offset + sum_k v_k wg_k.
template <int K, typename scalar_t, typename acc>
inline void backward_plane_fixed(const scalar_t* __restrict dy, const scalar_t* __restrict x,
                                 const scalar_t* __restrict v, const acc* wg, acc offset, acc m, acc r, int64_t HW,
                                 scalar_t* __restrict gx, acc* sums) {
  constexpr int L = kFixedLanes;
  acc dg_sum[L] = {}, dgx_sum[L] = {}, vg_sum[K][L] = {}, vb_sum[K][L] = {};
  const auto pixel = [&](int64_t p, int l) {
    acc vk[K];
    acc g = offset;
    for (int k = 0; k < K; ++k) {
      vk[k] = static_cast<acc>(v[k * HW + p]);
      g += vk[k] * wg[k];
    }
    const acc d = static_cast<acc>(dy[p]), xc = static_cast<acc>(x[p]) - m;
    const acc dg = d * g, dxh = d * xc * r;
    gx[p] = static_cast<scalar_t>(dg * r);
    dg_sum[l] += dg;
    dgx_sum[l] += dg * xc;
    for (int k = 0; k < K; ++k) {
      vg_sum[k][l] += dxh * vk[k];
      vb_sum[k][l] += d * vk[k];
    }
  };
  int64_t p = 0;
  for (; p + L <= HW; p += L)
    for (int l = 0; l < L; ++l) pixel(p + l, l);
  for (; p < HW; ++p) pixel(p, 0);
  for (int i = 0; i < 2 + 2 * K; ++i) sums[i] = 0;
  for (int l = 0; l < L; ++l) {
    sums[0] += dg_sum[l];
    sums[1] += dgx_sum[l];
    for (int k = 0; k < K; ++k) sums[2 + k] += vg_sum[k][l], sums[2 + K + k] += vb_sum[k][l];
  }
}

// Backward, pass 1, parallel over channels (each task owns grad_mean[:, c], grad_rstd[:, c] and the
// bank columns c and C + c, so the reductions over (n, pixels) need no atomics):
//   grad_x = dy * (offset + gamma) * rstd, grad_mean = -rstd * sum_p dy * (offset + gamma),
//   grad_rstd = sum_p dy * (offset + gamma) * (x - mean),
//   grad_bank[k, c] = sum dy * xhat * v_k, grad_bank[k, C + c] = sum dy * v_k.
// Partial sums (per block, or per lane with K fixed) are added to the totals, which keeps float
// accumulation error small.
template <int FixedK, typename scalar_t>
void semantic_backward_channels(const scalar_t* dy, const scalar_t* x, const acc_t<scalar_t>* mean,
                                const acc_t<scalar_t>* rstd, const scalar_t* v, const acc_t<scalar_t>* bank,
                                scalar_t* gx, acc_t<scalar_t>* gmean, acc_t<scalar_t>* grstd, acc_t<scalar_t>* gbank,
                                int64_t N, int64_t C, int64_t HW, int64_t K, double offset) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    acc g[kBlock], dyxh[kBlock], dyf[kBlock];
    std::vector<acc> tot_g(K), tot_b(K), plane(2 + 2 * K);
    acc wg[FixedK > 0 ? FixedK : 1], wb[FixedK > 0 ? FixedK : 1];
    for (int64_t c = begin; c < end; ++c) {
      std::fill(tot_g.begin(), tot_g.end(), acc(0));
      std::fill(tot_b.begin(), tot_b.end(), acc(0));
      if constexpr (FixedK > 0) bank_columns<FixedK>(bank, C, c, wg, wb);
      for (int64_t n = 0; n < N; ++n) {
        const int64_t nc = n * C + c;
        const acc m = mean[nc], r = rstd[nc];
        const scalar_t* xp = x + nc * HW;
        const scalar_t* dp = dy + nc * HW;
        const scalar_t* vn = v + n * K * HW;
        scalar_t* gp = gx + nc * HW;
        if constexpr (FixedK > 0) {
          backward_plane_fixed<FixedK>(dp, xp, vn, wg, static_cast<acc>(offset), m, r, HW, gp, plane.data());
          for (int k = 0; k < FixedK; ++k) tot_g[k] += plane[2 + k], tot_b[k] += plane[2 + FixedK + k];
          gmean[nc] = -r * plane[0];
          grstd[nc] = plane[1];
          continue;
        }
        acc sum_dyg = 0, sum_dygxc = 0;
        for (int64_t p0 = 0; p0 < HW; p0 += kBlock) {
          const int64_t len = std::min(kBlock, HW - p0);
          mix_block(vn + p0, HW, K, bank + c, 2 * C, static_cast<acc>(offset), len, g);
          acc bg = 0, bgx = 0;
          for (int64_t j = 0; j < len; ++j) {
            const acc d = static_cast<acc>(dp[p0 + j]);
            const acc xc = static_cast<acc>(xp[p0 + j]) - m;
            const acc dg = d * g[j];
            gp[p0 + j] = static_cast<scalar_t>(dg * r);
            bg += dg;
            bgx += dg * xc;
            dyxh[j] = d * xc * r;
            dyf[j] = d;
          }
          sum_dyg += bg;
          sum_dygxc += bgx;
          for (int64_t k = 0; k < K; ++k) {
            const scalar_t* vk = vn + k * HW + p0;
            acc sg = 0, sb = 0;
            for (int64_t j = 0; j < len; ++j) {
              const acc vj = static_cast<acc>(vk[j]);
              sg += dyxh[j] * vj;
              sb += dyf[j] * vj;
            }
            tot_g[k] += sg;
            tot_b[k] += sb;
          }
        }
        gmean[nc] = -r * sum_dyg;
        grstd[nc] = sum_dygxc;
      }
      for (int64_t k = 0; k < K; ++k) {
        gbank[k * 2 * C + c] = tot_g[k];
        gbank[k * 2 * C + C + c] = tot_b[k];
      }
    }
  });
}

// grad_v sums of one channel into the block sums s (K rows of kBlock), K fixed:
// s[k][j] += dy * xhat * wg_k + dy * wb_k.
template <int K, typename scalar_t, typename acc>
inline void vectors_block_fixed(const scalar_t* __restrict dp, const scalar_t* __restrict xp, const acc* wg,
                                const acc* wb, acc m, acc r, int64_t len, acc* __restrict s) {
  for (int64_t j = 0; j < len; ++j) {
    const acc d = static_cast<acc>(dp[j]);
    const acc dxh = d * (static_cast<acc>(xp[j]) - m) * r;
    for (int k = 0; k < K; ++k) s[k * kBlock + j] += dxh * wg[k] + d * wb[k];
  }
}

// Backward, pass 2, parallel over (n, pixel block) with the channel loop inside (each task owns its
// block of grad_vectors): grad_v[n, k, p] = sum_c dy * (xhat * bank[k, c] + bank[k, C + c]).
template <int FixedK, typename scalar_t>
void semantic_backward_vectors(const scalar_t* dy, const scalar_t* x, const acc_t<scalar_t>* mean,
                               const acc_t<scalar_t>* rstd, const acc_t<scalar_t>* bank, scalar_t* gv, int64_t N,
                               int64_t C, int64_t HW, int64_t K) {
  using acc = acc_t<scalar_t>;
  const int64_t blocks = (HW + kBlock - 1) / kBlock;
  at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> sums(K * kBlock);
    acc wg[FixedK > 0 ? FixedK : 1], wb[FixedK > 0 ? FixedK : 1];
    acc dyxh[kBlock], dyf[kBlock];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / blocks, p0 = (t % blocks) * kBlock;
      const int64_t len = std::min(kBlock, HW - p0);
      std::fill(sums.begin(), sums.end(), acc(0));
      for (int64_t c = 0; c < C; ++c) {
        const int64_t nc = n * C + c;
        const acc m = mean[nc], r = rstd[nc];
        const scalar_t* xp = x + nc * HW + p0;
        const scalar_t* dp = dy + nc * HW + p0;
        if constexpr (FixedK > 0) {
          bank_columns<FixedK>(bank, C, c, wg, wb);
          vectors_block_fixed<FixedK>(dp, xp, wg, wb, m, r, len, sums.data());
          continue;
        }
        for (int64_t j = 0; j < len; ++j) {
          const acc d = static_cast<acc>(dp[j]);
          dyf[j] = d;
          dyxh[j] = d * (static_cast<acc>(xp[j]) - m) * r;
        }
        for (int64_t k = 0; k < K; ++k) {
          const acc wgk = bank[k * 2 * C + c], wbk = bank[k * 2 * C + C + c];
          acc* s = sums.data() + k * kBlock;
          for (int64_t j = 0; j < len; ++j) s[j] += dyxh[j] * wgk + dyf[j] * wbk;
        }
      }
      for (int64_t k = 0; k < K; ++k) {
        scalar_t* out = gv + (n * K + k) * HW + p0;
        const acc* s = sums.data() + k * kBlock;
        for (int64_t j = 0; j < len; ++j) out[j] = static_cast<scalar_t>(s[j]);
      }
    }
  });
}

Tensor semantic_modulate_cpu(const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& vectors,
                             const Tensor& bank, double offset, int64_t stats_of_x) {
  constexpr const char* op = "semantic_modulate";
  check_stats_of_x(stats_of_x, op);
  check_semantic_inputs(x, mean, rstd, vectors, bank, op);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), K = vectors.size(1);
  const Tensor xc = x.contiguous(), vc = vectors.contiguous(), bc = bank.contiguous();
  const Tensor mc = mean.contiguous(), rc = rstd.contiguous();
  Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_semantic_modulate", [&] {
    using acc = acc_t<scalar_t>;
    with_fixed_k(K, [&](auto fixed) {
      semantic_modulate_cpu_impl<decltype(fixed)::value, scalar_t>(
          xc.data_ptr<scalar_t>(), mc.data_ptr<acc>(), rc.data_ptr<acc>(), vc.data_ptr<scalar_t>(), bc.data_ptr<acc>(),
          y.data_ptr<scalar_t>(), N, C, HW, K, offset);
    });
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> semantic_modulate_backward_cpu(
    const Tensor& grad_y, const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& vectors,
    const Tensor& bank, double offset) {
  constexpr const char* op = "semantic_modulate_backward";
  check_semantic_backward_inputs(grad_y, x, mean, rstd, vectors, bank, op);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), K = vectors.size(1);
  const Tensor dc = grad_y.contiguous(), xc = x.contiguous(), vc = vectors.contiguous(), bc = bank.contiguous();
  const Tensor mc = mean.contiguous(), rc = rstd.contiguous();
  Tensor gx = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor gmean = at::empty({N, C}, mean.options());
  Tensor grstd = at::empty({N, C}, mean.options());
  Tensor gv = at::empty(vectors.sizes(), vectors.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor gbank = at::empty({K, 2 * C}, bank.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_semantic_modulate_backward", [&] {
    using acc = acc_t<scalar_t>;
    with_fixed_k(K, [&](auto fixed) {
      constexpr int FixedK = decltype(fixed)::value;
      semantic_backward_channels<FixedK, scalar_t>(
          dc.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), mc.data_ptr<acc>(), rc.data_ptr<acc>(),
          vc.data_ptr<scalar_t>(), bc.data_ptr<acc>(), gx.data_ptr<scalar_t>(), gmean.data_ptr<acc>(),
          grstd.data_ptr<acc>(), gbank.data_ptr<acc>(), N, C, HW, K, offset);
      semantic_backward_vectors<FixedK, scalar_t>(dc.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), mc.data_ptr<acc>(),
                                                  rc.data_ptr<acc>(), bc.data_ptr<acc>(), gv.data_ptr<scalar_t>(), N, C,
                                                  HW, K);
    });
  });
  return {gx, gmean, grstd, gv, gbank};
}

// ---- SCC

// Forward, parallel over (n, c) planes: y = sum_k v_k * cand_k, accumulated per pixel block.
template <typename scalar_t>
void candidate_combine_cpu_impl(const scalar_t* v, const scalar_t* cand, scalar_t* y, int64_t N, int64_t K, int64_t C,
                                int64_t HW) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    acc s[kBlock];
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      for (int64_t p0 = 0; p0 < HW; p0 += kBlock) {
        const int64_t len = std::min(kBlock, HW - p0);
        for (int64_t j = 0; j < len; ++j) s[j] = acc(0);
        for (int64_t k = 0; k < K; ++k) {
          const scalar_t* vk = v + (n * K + k) * HW + p0;
          const scalar_t* ck = cand + ((n * K + k) * C + c) * HW + p0;
          for (int64_t j = 0; j < len; ++j) s[j] += static_cast<acc>(vk[j]) * static_cast<acc>(ck[j]);
        }
        scalar_t* yp = y + nc * HW + p0;
        for (int64_t j = 0; j < len; ++j) yp[j] = static_cast<scalar_t>(s[j]);
      }
    }
  });
}

// Pixels per block of the SCC backward: each task walks 2K + 1 planes per channel, kCombineBlock
// contiguous pixels in each (4 KiB of floats, a page, so the hardware prefetchers keep up; 256-pixel
// blocks took ~1.4x as long at (4, 3, 256, 64, 64), float32, 2 threads), with K x kCombineBlock sums and
// vectors in L1/L2.
constexpr int64_t kCombineBlock = 1024;

// Backward in one pass, parallel over (n, pixel block) with the channel loop inside: each task reads
// its block of dy once per channel, writes grad_cand = v * dy and owns grad_v[n, :, block]
// = sum_c dy * cand, so there are no races and no second read of dy.
template <typename scalar_t>
void candidate_combine_backward_impl(const scalar_t* dy, const scalar_t* v, const scalar_t* cand, scalar_t* gv,
                                     scalar_t* gcand, int64_t N, int64_t K, int64_t C, int64_t HW) {
  using acc = acc_t<scalar_t>;
  constexpr int64_t kBlock = kCombineBlock;
  const int64_t blocks = (HW + kBlock - 1) / kBlock;
  at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> sums(K * kBlock), vb(K * kBlock);
    acc d[kBlock];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / blocks, p0 = (t % blocks) * kBlock;
      const int64_t len = std::min(kBlock, HW - p0);
      std::fill(sums.begin(), sums.end(), acc(0));
      for (int64_t k = 0; k < K; ++k) {
        const scalar_t* vk = v + (n * K + k) * HW + p0;
        for (int64_t j = 0; j < len; ++j) vb[k * kBlock + j] = static_cast<acc>(vk[j]);
      }
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* dp = dy + (n * C + c) * HW + p0;
        for (int64_t j = 0; j < len; ++j) d[j] = static_cast<acc>(dp[j]);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t off = ((n * K + k) * C + c) * HW + p0;
          const scalar_t* ck = cand + off;
          scalar_t* gk = gcand + off;
          const acc* vk = vb.data() + k * kBlock;
          acc* s = sums.data() + k * kBlock;
          for (int64_t j = 0; j < len; ++j) {
            s[j] += d[j] * static_cast<acc>(ck[j]);
            gk[j] = static_cast<scalar_t>(vk[j] * d[j]);
          }
        }
      }
      for (int64_t k = 0; k < K; ++k) {
        scalar_t* out = gv + (n * K + k) * HW + p0;
        const acc* s = sums.data() + k * kBlock;
        for (int64_t j = 0; j < len; ++j) out[j] = static_cast<scalar_t>(s[j]);
      }
    }
  });
}

Tensor candidate_combine_cpu(const Tensor& vectors, const Tensor& candidates) {
  constexpr const char* op = "candidate_combine";
  check_combine_inputs(vectors, candidates, op);
  const int64_t N = vectors.size(0), K = vectors.size(1), C = candidates.size(2);
  const int64_t H = vectors.size(2), W = vectors.size(3);
  const Tensor vc = vectors.contiguous(), cc = candidates.contiguous();
  Tensor y = at::empty({N, C, H, W}, vectors.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, vectors.scalar_type(), "semnorm_candidate_combine", [&] {
    candidate_combine_cpu_impl<scalar_t>(vc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), N, K,
                                         C, H * W);
  });
  return y;
}

std::tuple<Tensor, Tensor> candidate_combine_backward_cpu(const Tensor& grad_y, const Tensor& vectors,
                                                          const Tensor& candidates) {
  constexpr const char* op = "candidate_combine_backward";
  check_combine_backward_inputs(grad_y, vectors, candidates, op);
  const int64_t N = vectors.size(0), K = vectors.size(1), C = candidates.size(2);
  const int64_t H = vectors.size(2), W = vectors.size(3);
  const Tensor dc = grad_y.contiguous(), vc = vectors.contiguous(), cc = candidates.contiguous();
  Tensor gv = at::empty(vectors.sizes(), vectors.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor gcand = at::empty(candidates.sizes(), candidates.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, vectors.scalar_type(),
                                  "semnorm_candidate_combine_backward", [&] {
    candidate_combine_backward_impl<scalar_t>(dc.data_ptr<scalar_t>(), vc.data_ptr<scalar_t>(),
                                              cc.data_ptr<scalar_t>(), gv.data_ptr<scalar_t>(),
                                              gcand.data_ptr<scalar_t>(), N, K, C, H * W);
  });
  return {gv, gcand};
}

}  // namespace

TORCH_LIBRARY_IMPL(semnorm, CPU, m) {
  m.impl("semantic_modulate", &semantic_modulate_cpu);
  m.impl("semantic_modulate_backward", &semantic_modulate_backward_cpu);
  m.impl("candidate_combine", &candidate_combine_cpu);
  m.impl("candidate_combine_backward", &candidate_combine_backward_cpu);
}

}  // namespace semnorm
