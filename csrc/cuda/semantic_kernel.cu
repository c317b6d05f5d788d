// SC-GAN's semantic ops on CUDA: semantic modulate (SCN) and candidate combine (SCC), the twins of
// csrc/cpu/semantic_kernel.cpp (same checks, same outputs).
//
// SCN mixes the rows of a (K, 2C) bank into per-pixel gamma / beta; no dense gamma / beta is ever
// built. The bank is first laid out as a (2, C, KP) table (KP = K rounded up to 4, zero padded) so
// that the K coefficients of one channel are contiguous: a block reads them with uniform 16-byte loads
// (the same address across the warp: one L1 transaction). Each thread keeps the K vector values of
// its pixels in registers (KMAX in {8, 16, 32}, a template) and walks a group of channels, so x, y,
// grad_y, grad_x are touched once and the vectors once per channel group.
//   forward: block = (n, tile of threads x 4 pixels, channel group); vec4 loads along the plane
//   when HW % 4 == 0 and the pointers are aligned, else one pixel per thread.
//   backward: block = (n, tile of threads x R pixels, channel group), R = 32 / KMAX pixels per
//   thread strided by blockDim (coalesced scalar loads). Per channel, each thread's partial sums of
//   dy*xhat*v_k and dy*v_k (the bank gradient) are summed over the warp by a butterfly
//   reduce-scatter (2K values in ~2K-1 shuffles instead of 2K*5), written to shared memory, and
//   every 8 channels summed over the warps in a fixed order into a per-(n, tile, channel) partial
//   slot; a second kernel sums the partials over tiles (grad_mean, grad_rstd) and (n, tiles)
//   (grad_bank) in a fixed order. grad_vectors accumulates over the group's channels in registers;
//   with several channel groups, per-group partials are summed in a fixed order.
//   K > 32 (beyond SC-GAN's configurations) falls back to a composition of ATen ops (matmul).
// SCC: forward one thread per 4 outputs of a (n, c) plane summing K products (vec4); backward block =
//   (n, k, channel group, chunk of the plane): grad_candidates elementwise, grad_vectors summed over
//   the channels in registers (per-group partials summed in a fixed order when the channels are
//   split for parallelism); k varies fastest across blocks so grad_y stays in L2 across the K blocks.
// No floating-point atomics anywhere: results are bitwise reproducible, deterministic mode included.
// Inputs are made contiguous like the CPU kernels do (channels_last is copied once).
#include "../checks/semantic_checks.h"
#include "common.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

namespace semnorm {
namespace cuda {
namespace {

// ---- shared pieces

// (K, 2C) bank -> (2, C, KP) table, zero padded along k: row (0, c) holds the gamma coefficients of
// channel c, row (1, c) the beta coefficients.
Tensor bank_table(const Tensor& bank, int64_t K, int64_t C, int64_t KP) {
  Tensor table = at::zeros({2, C, KP}, bank.options());
  table.narrow(2, 0, K).copy_(bank.view({K, 2, C}).permute({1, 2, 0}));
  return table;
}

// Blocks over (n, pixel tile, channel group), the group fastest.
struct TileGrid {
  int threads = kThreads;
  int64_t tiles = 1, groups = 1, group_size = 1, blocks = 1;
};

TileGrid tile_grid(int64_t N, int64_t C, int64_t HW, int pixels_per_thread, int blocks_per_sm) {
  TileGrid g;
  g.threads = threads_for(ceil_div(HW, pixels_per_thread));
  g.tiles = ceil_div(HW, static_cast<int64_t>(g.threads) * pixels_per_thread);
  const int64_t base = N * g.tiles;
  const int64_t target = static_cast<int64_t>(blocks_per_sm) * multiprocessor_count();
  const int64_t want = base >= target ? 1 : std::min(C, ceil_div(target, base));
  g.group_size = ceil_div(C, want);
  g.groups = ceil_div(C, g.group_size);
  g.blocks = base * g.groups;
  TORCH_CHECK(g.blocks < (int64_t(1) << 31), "semnorm: tensor too large for the CUDA grid");
  return g;
}

// Sums each of the MV values of a[] over the 32 lanes of the warp (a butterfly reduce-scatter):
// afterwards lane l holds in a[i], i < max(1, MV / 32), the total of value index
// l * (MV / 32) + i when MV >= 32, and of value index l >> 1 when MV == 16 (lanes l and l ^ 1 both).
// Fixed data flow: bitwise reproducible.
template <int MV, int L, int MASK, typename T>
__device__ __forceinline__ void reduce_scatter_step(T (&a)[MV], int lane) {
  if constexpr (MASK > 0) {
    if constexpr (L >= 2) {
      constexpr int H = L / 2;
      const bool upper = (lane & MASK) != 0;
#pragma unroll
      for (int i = 0; i < H; ++i) {
        const T send = upper ? a[i] : a[i + H];
        const T keep = upper ? a[i + H] : a[i];
        a[i] = keep + __shfl_xor_sync(0xffffffffu, send, MASK);
      }
      reduce_scatter_step<MV, H, MASK / 2>(a, lane);
    } else {
      a[0] += __shfl_xor_sync(0xffffffffu, a[0], MASK);
      reduce_scatter_step<MV, 1, MASK / 2>(a, lane);
    }
  }
}

template <int MV, typename T>
__device__ __forceinline__ void warp_reduce_scatter(T (&a)[MV]) {
  static_assert(MV == 16 || MV == 32 || MV == 64, "reduce-scatter of 16, 32 or 64 values");
  reduce_scatter_step<MV, MV, 16>(a, static_cast<int>(threadIdx.x % kWarp));
}

// ---------------------------------------------------------------------------------------------
// semantic_modulate

template <typename scalar_t>
struct SemanticArgs {
  using acc = acc_t<scalar_t>;
  const scalar_t* x;
  const acc* mean;
  const acc* rstd;
  const scalar_t* v;
  const acc* table;  // (2, C, KP)
  int64_t N, C, HW;
  int K, KP;
  int64_t tiles, groups, group_size;
  acc offset;
};

// y = (x - mean) * rstd * (offset + sum_k v_k * table[0, c, k]) + sum_k v_k * table[1, c, k]
template <typename scalar_t, int KMAX, int VEC>
__global__ void __launch_bounds__(kThreads) semantic_forward_kernel(const SemanticArgs<scalar_t> A,
                                                                    scalar_t* __restrict__ y) {
  using acc = acc_t<scalar_t>;
  const int64_t b = blockIdx.x;
  const int64_t g = b % A.groups, t = (b / A.groups) % A.tiles, n = b / (A.groups * A.tiles);
  const int64_t p = (t * blockDim.x + threadIdx.x) * VEC;
  if (p >= A.HW) return;  // nothing block-wide below; with VEC > 1, HW % VEC == 0: the vector is inside
  acc vr[KMAX][VEC];
#pragma unroll
  for (int k = 0; k < KMAX; ++k) {
    if (k < A.K) {
      scalar_t tmp[VEC];
      load_vec<VEC>(A.v + (n * A.K + k) * A.HW + p, tmp);
#pragma unroll
      for (int j = 0; j < VEC; ++j) vr[k][j] = static_cast<acc>(tmp[j]);
    } else {
#pragma unroll
      for (int j = 0; j < VEC; ++j) vr[k][j] = acc(0);
    }
  }
  const int64_t c0 = g * A.group_size, c1 = min64(A.C, c0 + A.group_size);
  for (int64_t c = c0; c < c1; ++c) {
    const acc m = A.mean[n * A.C + c], r = A.rstd[n * A.C + c];
    const acc* tg = A.table + c * A.KP;
    const acc* tb = A.table + (A.C + c) * A.KP;
    acc gam[VEC], bet[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      gam[j] = A.offset;
      bet[j] = acc(0);
    }
#pragma unroll
    for (int k4 = 0; k4 < KMAX / 4; ++k4) {
      if (4 * k4 < A.KP) {
        acc cg[4], cb[4];
        load_vec<4>(tg + 4 * k4, cg);
        load_vec<4>(tb + 4 * k4, cb);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            gam[j] += vr[4 * k4 + i][j] * cg[i];
            bet[j] += vr[4 * k4 + i][j] * cb[i];
          }
        }
      }
    }
    const int64_t q = (n * A.C + c) * A.HW + p;
    scalar_t xv[VEC], out[VEC];
    load_vec<VEC>(A.x + q, xv);
#pragma unroll
    for (int j = 0; j < VEC; ++j) out[j] = static_cast<scalar_t>((static_cast<acc>(xv[j]) - m) * r * gam[j] + bet[j]);
    store_vec<VEC>(y + q, out);
  }
}

// Backward. part: (N * tiles, C, 2K + 2) partial sums of this block's pixels per channel:
// [0, K) dy*xhat*v_k, [K, 2K) dy*v_k, 2K dy*(offset+gamma), 2K+1 dy*(offset+gamma)*(x-mean).
// grad_vectors goes to gv (one channel group) or to gv_part (groups, N, K, HW).
template <typename scalar_t, int KMAX, int R>
__global__ void __launch_bounds__(kThreads) semantic_backward_kernel(
    const scalar_t* __restrict__ dy, const SemanticArgs<scalar_t> A, scalar_t* __restrict__ gx,
    scalar_t* __restrict__ gv, acc_t<scalar_t>* __restrict__ gv_part, acc_t<scalar_t>* __restrict__ part) {
  using acc = acc_t<scalar_t>;
  constexpr int MV = 2 * KMAX;    // reduce-scattered values per channel
  constexpr int CB = 8;           // channels between two flushes of the shared partials
  constexpr int STRIDE = MV + 2;  // + the two plane sums
  __shared__ acc red[CB * (kThreads / kWarp) * STRIDE];
  const int warps = blockDim.x / kWarp, warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t b = blockIdx.x;
  const int64_t g = b % A.groups, t = (b / A.groups) % A.tiles, n = b / (A.groups * A.tiles);
  const int K = A.K, Mp = 2 * A.K + 2;

  // This thread's pixels: tile base + j * blockDim + threadIdx (coalesced across the warp).
  int64_t pix[R];
  bool valid[R];
  acc vr[R][KMAX], gvr[R][KMAX];
#pragma unroll
  for (int j = 0; j < R; ++j) {
    pix[j] = (t * R + j) * blockDim.x + threadIdx.x;
    valid[j] = pix[j] < A.HW;
#pragma unroll
    for (int k = 0; k < KMAX; ++k) {
      vr[j][k] = (valid[j] && k < K) ? static_cast<acc>(A.v[(n * K + k) * A.HW + pix[j]]) : acc(0);
      gvr[j][k] = acc(0);
    }
  }

  const int64_t c0 = g * A.group_size, c1 = min64(A.C, c0 + A.group_size);
  // Every thread runs every iteration (invalid pixels contribute zeros): the barriers are uniform.
  for (int64_t c = c0; c < c1; ++c) {
    const int cc = static_cast<int>((c - c0) % CB);
    const acc m = A.mean[n * A.C + c], r = A.rstd[n * A.C + c];
    const acc* tg = A.table + c * A.KP;
    const acc* tb = A.table + (A.C + c) * A.KP;
    acc gam[R];
#pragma unroll
    for (int j = 0; j < R; ++j) gam[j] = A.offset;
#pragma unroll
    for (int k4 = 0; k4 < KMAX / 4; ++k4) {
      if (4 * k4 < A.KP) {
        acc cg[4];
        load_vec<4>(tg + 4 * k4, cg);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
          for (int j = 0; j < R; ++j) gam[j] += vr[j][4 * k4 + i] * cg[i];
        }
      }
    }
    acc e1[R], e2[R], sdg = 0, sdgx = 0;
#pragma unroll
    for (int j = 0; j < R; ++j) {
      e1[j] = acc(0);
      e2[j] = acc(0);
      if (valid[j]) {
        const int64_t q = (n * A.C + c) * A.HW + pix[j];
        const acc d = static_cast<acc>(dy[q]);
        const acc xcen = static_cast<acc>(A.x[q]) - m;
        const acc dg = d * gam[j];
        gx[q] = static_cast<scalar_t>(dg * r);
        sdg += dg;
        sdgx += dg * xcen;
        e1[j] = d * xcen * r;
        e2[j] = d;
      }
    }
    acc a[MV];
#pragma unroll
    for (int i = 0; i < MV; ++i) a[i] = acc(0);
#pragma unroll
    for (int k4 = 0; k4 < KMAX / 4; ++k4) {
      if (4 * k4 < A.KP) {
        acc cg[4], cb[4];
        load_vec<4>(tg + 4 * k4, cg);
        load_vec<4>(tb + 4 * k4, cb);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int k = 4 * k4 + i;
#pragma unroll
          for (int j = 0; j < R; ++j) {
            gvr[j][k] += e1[j] * cg[i] + e2[j] * cb[i];
            a[k] += e1[j] * vr[j][k];
            a[KMAX + k] += e2[j] * vr[j][k];
          }
        }
      }
    }
    warp_reduce_scatter<MV>(a);
    sdg = warp_sum(sdg);
    sdgx = warp_sum(sdgx);
    acc* slot = red + (cc * warps + warp) * STRIDE;
    if constexpr (MV >= 32) {
#pragma unroll
      for (int i = 0; i < MV / 32; ++i) slot[lane * (MV / 32) + i] = a[i];
    } else {
      if ((lane & 1) == 0) slot[lane >> 1] = a[0];
    }
    if (lane == 0) {
      slot[MV] = sdg;
      slot[MV + 1] = sdgx;
    }
    if (cc == CB - 1 || c == c1 - 1) {  // uniform across the block
      __syncthreads();
      const int nch = cc + 1;
      const int64_t cfirst = c - cc;
      for (int qi = threadIdx.x; qi < nch * Mp; qi += blockDim.x) {
        const int ch = qi / Mp, jj = qi % Mp;
        const int idx = jj < K ? jj : (jj < 2 * K ? KMAX + jj - K : MV + jj - 2 * K);
        acc s = 0;
        for (int w = 0; w < warps; ++w) s += red[(ch * warps + w) * STRIDE + idx];
        part[((n * A.tiles + t) * A.C + cfirst + ch) * Mp + jj] = s;
      }
      __syncthreads();
    }
  }

#pragma unroll
  for (int j = 0; j < R; ++j) {
    if (!valid[j]) continue;
#pragma unroll
    for (int k = 0; k < KMAX; ++k) {
      if (k < K) {
        if (gv_part != nullptr) {
          gv_part[((g * A.N + n) * K + k) * A.HW + pix[j]] = gvr[j][k];
        } else {
          gv[(n * K + k) * A.HW + pix[j]] = static_cast<scalar_t>(gvr[j][k]);
        }
      }
    }
  }
}

// Rows [0, NC): grad_mean = -rstd * sum over tiles; [NC, 2NC): grad_rstd; then 2K*C rows of the
// bank gradient, summed over (n, tile). Fixed order (block_sum's tree over a fixed striding).
template <typename acc>
__global__ void semantic_finalize_kernel(const acc* __restrict__ part, const acc* __restrict__ rstd,
                                         acc* __restrict__ gmean, acc* __restrict__ grstd, acc* __restrict__ gbank,
                                         int64_t N, int64_t C, int64_t tiles, int K) {
  __shared__ acc scratch[kThreads / kWarp];
  const int64_t r = blockIdx.x, NC = N * C, Mp = 2 * K + 2;
  int64_t items, first, step;
  if (r < 2 * NC) {
    const int64_t nc = r % NC, n = nc / C, c = nc % C;
    items = tiles;
    first = (n * tiles * C + c) * Mp + 2 * K + r / NC;
    step = C * Mp;
  } else {
    const int64_t q = r - 2 * NC, j = q / C, c = q % C;
    items = N * tiles;
    first = c * Mp + j;
    step = C * Mp;
  }
  acc s = 0;
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) s += part[first + i * step];
  s = block_sum(s, scratch);
  if (threadIdx.x != 0) return;
  if (r < NC) {
    gmean[r] = -rstd[r] * s;
  } else if (r < 2 * NC) {
    grstd[r - NC] = s;
  } else {
    const int64_t q = r - 2 * NC, j = q / C, c = q % C;
    gbank[j < K ? j * 2 * C + c : (j - K) * 2 * C + C + c] = s;
  }
}

// out[i] = sum_g part[g * count + i] in a fixed order, cast to scalar_t.
template <typename scalar_t>
__global__ void sum_groups_kernel(const acc_t<scalar_t>* __restrict__ part, scalar_t* __restrict__ out, int64_t count,
                                  int64_t groups) {
  SEMNORM_GRID_STRIDE(i, count) {
    acc_t<scalar_t> s = 0;
    for (int64_t g = 0; g < groups; ++g) s += part[g * count + i];
    out[i] = static_cast<scalar_t>(s);
  }
}

template <typename F>
void dispatch_kmax(int64_t K, F&& f) {
  if (K <= 8) {
    f(std::integral_constant<int, 8>{});
  } else if (K <= 16) {
    f(std::integral_constant<int, 16>{});
  } else {
    f(std::integral_constant<int, 32>{});
  }
}

constexpr int64_t kMaxRegisterK = 32;

// K > 32: the same math as a composition of ATen ops (batched matmuls), in opmath.
Tensor semantic_modulate_composite(const Tensor& xc, const Tensor& mc, const Tensor& rc, const Tensor& vc,
                                   const Tensor& bc, double offset) {
  const int64_t N = xc.size(0), C = xc.size(1), HW = xc.size(2) * xc.size(3), K = vc.size(1);
  const auto acc = bc.scalar_type();
  const Tensor vf = vc.to(acc).reshape({N, K, HW});
  const Tensor gb = bc.t().matmul(vf);  // (N, 2C, HW)
  const Tensor xhat = xc.to(acc).reshape({N, C, HW}).sub(mc.unsqueeze(2)).mul(rc.unsqueeze(2));
  const Tensor y = xhat.mul(gb.narrow(1, 0, C).add(offset)).add(gb.narrow(1, C, C));
  return y.to(xc.scalar_type()).view(xc.sizes()).contiguous();
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> semantic_backward_composite(const Tensor& dc, const Tensor& xc,
                                                                               const Tensor& mc, const Tensor& rc,
                                                                               const Tensor& vc, const Tensor& bc,
                                                                               double offset) {
  const int64_t N = xc.size(0), C = xc.size(1), HW = xc.size(2) * xc.size(3), K = vc.size(1);
  const auto acc = bc.scalar_type();
  const int64_t last[] = {2};
  const Tensor vf = vc.to(acc).reshape({N, K, HW});
  const Tensor bank_g = bc.narrow(1, 0, C), bank_b = bc.narrow(1, C, C);
  const Tensor gam = bank_g.t().matmul(vf).add(offset);  // (N, C, HW)
  const Tensor d = dc.to(acc).reshape({N, C, HW});
  const Tensor xcen = xc.to(acc).reshape({N, C, HW}).sub(mc.unsqueeze(2));
  const Tensor r = rc.unsqueeze(2);
  const Tensor dg = d.mul(gam);
  const Tensor gx = dg.mul(r).to(xc.scalar_type()).view(xc.sizes()).contiguous();
  const Tensor gmean = dg.sum(at::IntArrayRef(last)).mul(rc).neg();
  const Tensor grstd = dg.mul(xcen).sum(at::IntArrayRef(last));
  const Tensor e1 = d.mul(xcen).mul(r);
  Tensor gbank = at::empty({K, 2 * C}, bc.options());
  const int64_t first[] = {0};
  gbank.narrow(1, 0, C).copy_(vf.matmul(e1.transpose(1, 2)).sum(at::IntArrayRef(first)));
  gbank.narrow(1, C, C).copy_(vf.matmul(d.transpose(1, 2)).sum(at::IntArrayRef(first)));
  const Tensor gv = bank_g.matmul(e1).add(bank_b.matmul(d)).to(vc.scalar_type()).view(vc.sizes()).contiguous();
  return {gx, gmean.contiguous(), grstd.contiguous(), gv, gbank};
}

Tensor semantic_modulate_cuda(const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& vectors,
                              const Tensor& bank, double offset, int64_t stats_of_x) {
  constexpr const char* op = "semantic_modulate";
  check_stats_of_x(stats_of_x, op);
  check_semantic_inputs(x, mean, rstd, vectors, bank, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), K = vectors.size(1);
  const Tensor xc = x.contiguous(), vc = vectors.contiguous(), bc = bank.contiguous();
  const Tensor mc = mean.contiguous(), rc = rstd.contiguous();
  if (K > kMaxRegisterK) return semantic_modulate_composite(xc, mc, rc, vc, bc, offset);
  const int64_t KP = ceil_div(K, 4) * 4;
  const Tensor table = bank_table(bc, K, C, KP);
  Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_semantic_modulate_cuda", [&] {
    using acc = acc_t<scalar_t>;
    SemanticArgs<scalar_t> A;
    A.x = xc.data_ptr<scalar_t>();
    A.mean = mc.data_ptr<acc>();
    A.rstd = rc.data_ptr<acc>();
    A.v = vc.data_ptr<scalar_t>();
    A.table = table.data_ptr<acc>();
    A.N = N;
    A.C = C;
    A.HW = HW;
    A.K = static_cast<int>(K);
    A.KP = static_cast<int>(KP);
    A.offset = static_cast<acc>(offset);
    scalar_t* yp = y.data_ptr<scalar_t>();
    dispatch_kmax(K, [&](auto kmax) {
      constexpr int KMAX = decltype(kmax)::value;
      // 4 pixels per thread keep KMAX * 4 vector values in registers: up to KMAX = 16.
      const bool vec = KMAX <= 16 && HW % 4 == 0 && vec_aligned(A.x, 4) && vec_aligned(A.v, 4) && vec_aligned(yp, 4);
      const TileGrid g = tile_grid(N, C, HW, vec ? 4 : 1, 4);
      A.tiles = g.tiles;
      A.groups = g.groups;
      A.group_size = g.group_size;
      if constexpr (KMAX <= 16) {
        if (vec) {
          semantic_forward_kernel<scalar_t, KMAX, 4>
              <<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(A, yp);
          SEMNORM_CUDA_CHECK_LAUNCH();
          return;
        }
      }
      semantic_forward_kernel<scalar_t, KMAX, 1><<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(A, yp);
      SEMNORM_CUDA_CHECK_LAUNCH();
    });
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> semantic_modulate_backward_cuda(
    const Tensor& grad_y, const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& vectors,
    const Tensor& bank, double offset) {
  constexpr const char* op = "semantic_modulate_backward";
  check_semantic_backward_inputs(grad_y, x, mean, rstd, vectors, bank, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), K = vectors.size(1);
  const Tensor dc = grad_y.contiguous(), xc = x.contiguous(), vc = vectors.contiguous(), bc = bank.contiguous();
  const Tensor mc = mean.contiguous(), rc = rstd.contiguous();
  if (K > kMaxRegisterK) return semantic_backward_composite(dc, xc, mc, rc, vc, bc, offset);
  const int64_t KP = ceil_div(K, 4) * 4;
  const Tensor table = bank_table(bc, K, C, KP);
  Tensor gx = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor gmean = at::empty({N, C}, mean.options());
  Tensor grstd = at::empty({N, C}, mean.options());
  Tensor gv = at::empty(vectors.sizes(), vectors.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor gbank = at::empty({K, 2 * C}, bank.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_semantic_modulate_backward_cuda",
                                  [&] {
    using acc = acc_t<scalar_t>;
    SemanticArgs<scalar_t> A;
    A.x = xc.data_ptr<scalar_t>();
    A.mean = mc.data_ptr<acc>();
    A.rstd = rc.data_ptr<acc>();
    A.v = vc.data_ptr<scalar_t>();
    A.table = table.data_ptr<acc>();
    A.N = N;
    A.C = C;
    A.HW = HW;
    A.K = static_cast<int>(K);
    A.KP = static_cast<int>(KP);
    A.offset = static_cast<acc>(offset);
    dispatch_kmax(K, [&](auto kmax) {
      constexpr int KMAX = decltype(kmax)::value;
      constexpr int R = 32 / KMAX;  // pixels per thread: R * KMAX vector values in registers
      const TileGrid g = tile_grid(N, C, HW, R, 2);
      A.tiles = g.tiles;
      A.groups = g.groups;
      A.group_size = g.group_size;
      const auto opts = bank.options();
      Tensor part = at::empty({N * g.tiles, C, 2 * K + 2}, opts);
      Tensor gv_part = g.groups > 1 ? at::empty({g.groups, N, K, HW}, opts) : Tensor();
      semantic_backward_kernel<scalar_t, KMAX, R><<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(
          dc.data_ptr<scalar_t>(), A, gx.data_ptr<scalar_t>(), gv.data_ptr<scalar_t>(),
          g.groups > 1 ? gv_part.data_ptr<acc>() : nullptr, part.data_ptr<acc>());
      SEMNORM_CUDA_CHECK_LAUNCH();
      const int64_t rows = 2 * N * C + 2 * K * C;
      semantic_finalize_kernel<acc><<<static_cast<unsigned int>(rows), threads_for(N * g.tiles), 0, stream()>>>(
          part.data_ptr<acc>(), A.rstd, gmean.data_ptr<acc>(), grstd.data_ptr<acc>(), gbank.data_ptr<acc>(), N, C,
          g.tiles, A.K);
      SEMNORM_CUDA_CHECK_LAUNCH();
      if (g.groups > 1) {
        const int64_t count = N * K * HW;
        sum_groups_kernel<scalar_t><<<grid_for(count), kThreads, 0, stream()>>>(gv_part.data_ptr<acc>(),
                                                                                gv.data_ptr<scalar_t>(), count,
                                                                                g.groups);
        SEMNORM_CUDA_CHECK_LAUNCH();
      }
    });
  });
  return {gx, gmean, grstd, gv, gbank};
}

// ---------------------------------------------------------------------------------------------
// candidate_combine

// y[n, c, p] = sum_k v[n, k, p] * cand[n, k, c, p]; one block per (plane, chunk) as in PlaneGrid.
template <typename scalar_t, int VEC>
__global__ void combine_forward_kernel(const scalar_t* __restrict__ v, const scalar_t* __restrict__ cand,
                                       scalar_t* __restrict__ y, int64_t K, int64_t C, int64_t HW, int64_t splits,
                                       int64_t chunk) {
  using acc = acc_t<scalar_t>;
  const int64_t plane = blockIdx.x / splits, split = blockIdx.x % splits;
  const int64_t n = plane / C, c = plane % C;
  const int64_t begin = split * chunk, end = min64(HW, begin + chunk);
  for (int64_t p = begin + static_cast<int64_t>(threadIdx.x) * VEC; p < end;
       p += static_cast<int64_t>(blockDim.x) * VEC) {
    acc s[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) s[j] = acc(0);
    for (int64_t k = 0; k < K; ++k) {
      scalar_t vv[VEC], cv[VEC];
      load_vec<VEC>(v + (n * K + k) * HW + p, vv);
      load_vec<VEC>(cand + ((n * K + k) * C + c) * HW + p, cv);
#pragma unroll
      for (int j = 0; j < VEC; ++j) s[j] += static_cast<acc>(vv[j]) * static_cast<acc>(cv[j]);
    }
    scalar_t out[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) out[j] = static_cast<scalar_t>(s[j]);
    store_vec<VEC>(y + plane * HW + p, out);
  }
}

// Block b = ((n * groups + g) * splits + split) * K + k (k fastest: the K blocks sharing a chunk of
// grad_y run side by side). grad_cand = v * dy; grad_v summed over the group's channels.
template <typename scalar_t, int VEC>
__global__ void combine_backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ v,
                                        const scalar_t* __restrict__ cand, scalar_t* __restrict__ gv,
                                        acc_t<scalar_t>* __restrict__ gv_part, scalar_t* __restrict__ gcand,
                                        int64_t N, int64_t K, int64_t C, int64_t HW, int64_t splits, int64_t chunk,
                                        int64_t groups, int64_t group_size) {
  using acc = acc_t<scalar_t>;
  const int64_t b = blockIdx.x;
  const int64_t k = b % K, split = (b / K) % splits, g = (b / (K * splits)) % groups, n = b / (K * splits * groups);
  const int64_t begin = split * chunk, end = min64(HW, begin + chunk);
  const int64_t c0 = g * group_size, c1 = min64(C, c0 + group_size);
  const int64_t vbase = (n * K + k) * HW;
  for (int64_t p = begin + static_cast<int64_t>(threadIdx.x) * VEC; p < end;
       p += static_cast<int64_t>(blockDim.x) * VEC) {
    scalar_t vv[VEC];
    load_vec<VEC>(v + vbase + p, vv);
    acc va[VEC], s[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      va[j] = static_cast<acc>(vv[j]);
      s[j] = acc(0);
    }
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t cq = ((n * K + k) * C + c) * HW + p;
      scalar_t dv[VEC], cv[VEC], out[VEC];
      load_vec<VEC>(dy + (n * C + c) * HW + p, dv);
      load_vec<VEC>(cand + cq, cv);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const acc d = static_cast<acc>(dv[j]);
        s[j] += d * static_cast<acc>(cv[j]);
        out[j] = static_cast<scalar_t>(va[j] * d);
      }
      store_vec<VEC>(gcand + cq, out);
    }
    if (gv_part != nullptr) {
      store_vec<VEC>(gv_part + g * N * K * HW + vbase + p, s);
    } else {
      scalar_t out[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) out[j] = static_cast<scalar_t>(s[j]);
      store_vec<VEC>(gv + vbase + p, out);
    }
  }
}

Tensor candidate_combine_cuda(const Tensor& vectors, const Tensor& candidates) {
  constexpr const char* op = "candidate_combine";
  check_combine_inputs(vectors, candidates, op);
  const c10::cuda::CUDAGuard guard(vectors.device());
  const int64_t N = vectors.size(0), K = vectors.size(1), C = candidates.size(2);
  const int64_t H = vectors.size(2), W = vectors.size(3), HW = H * W;
  const Tensor vc = vectors.contiguous(), cc = candidates.contiguous();
  Tensor y = at::empty({N, C, H, W}, vectors.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, vectors.scalar_type(), "semnorm_candidate_combine_cuda",
                                  [&] {
    const scalar_t* vp = vc.data_ptr<scalar_t>();
    const scalar_t* cp = cc.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const int vec = HW % 4 == 0 && vec_aligned(vp, 4) && vec_aligned(cp, 4) && vec_aligned(yp, 4) ? 4 : 1;
    const PlaneGrid g = plane_grid(N * C, HW, vec);
    if (vec == 4) {
      combine_forward_kernel<scalar_t, 4><<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(
          vp, cp, yp, K, C, HW, g.splits, g.chunk);
    } else {
      combine_forward_kernel<scalar_t, 1><<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(
          vp, cp, yp, K, C, HW, g.splits, g.chunk);
    }
    SEMNORM_CUDA_CHECK_LAUNCH();
  });
  return y;
}

std::tuple<Tensor, Tensor> candidate_combine_backward_cuda(const Tensor& grad_y, const Tensor& vectors,
                                                           const Tensor& candidates) {
  constexpr const char* op = "candidate_combine_backward";
  check_combine_backward_inputs(grad_y, vectors, candidates, op);
  const int64_t N = vectors.size(0), K = vectors.size(1), C = candidates.size(2);
  const int64_t H = vectors.size(2), W = vectors.size(3), HW = H * W;
  const c10::cuda::CUDAGuard guard(vectors.device());
  const Tensor dc = grad_y.contiguous(), vc = vectors.contiguous(), cc = candidates.contiguous();
  Tensor gv = at::empty(vectors.sizes(), vectors.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor gcand = at::empty(candidates.sizes(), candidates.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, vectors.scalar_type(),
                                  "semnorm_candidate_combine_backward_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* dp = dc.data_ptr<scalar_t>();
    const scalar_t* vp = vc.data_ptr<scalar_t>();
    const scalar_t* cp = cc.data_ptr<scalar_t>();
    scalar_t* gvp = gv.data_ptr<scalar_t>();
    scalar_t* gcp = gcand.data_ptr<scalar_t>();
    const int vec = HW % 4 == 0 && vec_aligned(dp, 4) && vec_aligned(vp, 4) && vec_aligned(cp, 4) &&
                            vec_aligned(gvp, 4) && vec_aligned(gcp, 4)
                        ? 4
                        : 1;
    PlaneGrid pg = plane_grid(N * K, HW, vec);
    // Too few blocks: split the channels into groups (partial grad_v per group, summed afterwards).
    const int64_t target = 4 * static_cast<int64_t>(multiprocessor_count());
    const int64_t want = pg.blocks >= target ? 1 : std::min(C, ceil_div(target, pg.blocks));
    const int64_t group_size = ceil_div(C, want), groups = ceil_div(C, group_size);
    const int64_t blocks = pg.blocks * groups;
    TORCH_CHECK(blocks < (int64_t(1) << 31), "semnorm.", op, ": tensor too large for the CUDA grid");
    Tensor gv_part = groups > 1 ? at::empty({groups, N, K, HW}, vectors.options().dtype(opmath_dtype(
                                                                         vectors.scalar_type())))
                                : Tensor();
    acc* gpp = groups > 1 ? gv_part.data_ptr<acc>() : nullptr;
    if (vec == 4) {
      combine_backward_kernel<scalar_t, 4><<<static_cast<unsigned int>(blocks), pg.threads, 0, stream()>>>(
          dp, vp, cp, gvp, gpp, gcp, N, K, C, HW, pg.splits, pg.chunk, groups, group_size);
    } else {
      combine_backward_kernel<scalar_t, 1><<<static_cast<unsigned int>(blocks), pg.threads, 0, stream()>>>(
          dp, vp, cp, gvp, gpp, gcp, N, K, C, HW, pg.splits, pg.chunk, groups, group_size);
    }
    SEMNORM_CUDA_CHECK_LAUNCH();
    if (groups > 1) {
      const int64_t count = N * K * HW;
      sum_groups_kernel<scalar_t><<<grid_for(count), kThreads, 0, stream()>>>(gpp, gvp, count, groups);
      SEMNORM_CUDA_CHECK_LAUNCH();
    }
  });
  return {gv, gcand};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(semnorm, CUDA, m) {
  m.impl("semantic_modulate", &cuda::semantic_modulate_cuda);
  m.impl("semantic_modulate_backward", &cuda::semantic_modulate_backward_cuda);
  m.impl("candidate_combine", &cuda::candidate_combine_cuda);
  m.impl("candidate_combine_backward", &cuda::candidate_combine_backward_cuda);
}

}  // namespace semnorm
