// Norm statistics (channel_moments) and the fused normalize + modulate (normalize_modulate) on CUDA:
// the twins of csrc/cpu/stats_kernel.cpp (same checks, same outputs).
//
// Geometry: every kernel here walks (n, c) planes of HW contiguous elements. A plane is cut into
// `splits` chunks (more than one only when there are too few planes to fill the device); block b
// handles chunk b % splits of plane b / splits, its threads striding over the chunk VEC elements at a
// time (VEC = 4 when HW % 4 == 0 and every pointer is aligned: one 16-byte load of 4 floats, 8 bytes
// of 4 halves; else VEC = 1). x and grad_y are read once.
//
// channel_moments: per thread Welford over its elements (4 at a time: the exact mean / M2 of the 4
// values merged by Chan's formula), Chan merge across the block (block_welford), one partial state
// per block; a second kernel merges the partial states of each output (the splits of a plane, or
// the N planes x splits of a channel) in a fixed order. Never E[x^2] - E[x]^2. The states hold
// x_eff - shift, the shift being one value of the output's data (see moment_shift), so float32
// states stay accurate for data with a large mean.
// Backward reductions (grad_mean / grad_rstd per plane, grad_blend, grad_noise_scale per channel):
// per-block partial sums in a fixed slot, then a fixed-order second pass (row_sum_kernel).
// No floating-point atomics anywhere in this file: every result is bitwise reproducible, so the
// deterministic mode needs no separate path.
//
// Inputs are made contiguous like the CPU kernels do (channels_last x is copied once).
#include "../checks/stats_checks.h"
#include "common.cuh"

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

namespace semnorm {
namespace cuda {
namespace {

template <typename F>
void dispatch_bool(bool b, F&& f) {
  if (b) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// ---------------------------------------------------------------------------------------------
// Fixed-order reductions of per-block partials.

enum RowMap : int {
  kPerPlane = 0,    // row r = plane: items are its splits, src = r * splits + i
  kPerChannel = 1,  // row r = channel: items are (n, split), src = ((i / splits) * C + r) * splits + i % splits
  kAll = 2,         // a single row over every item, src = i
};

// out[r] = sum_i in[src(r, i) * stride + offset] (times -neg_scale[r] when given), summed in a
// fixed order: thread t takes items t, t + blockDim, ..., then block_sum's fixed tree.
template <typename acc>
__global__ void row_sum_kernel(const acc* __restrict__ in, acc* __restrict__ out, int64_t items, int64_t C,
                               int64_t splits, int stride, int offset, int map, const acc* __restrict__ neg_scale) {
  __shared__ acc scratch[kThreads / kWarp];
  const int64_t r = blockIdx.x;
  acc s = 0;
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    int64_t src;
    if (map == kPerPlane) {
      src = r * splits + i;
    } else if (map == kPerChannel) {
      src = ((i / splits) * C + r) * splits + i % splits;
    } else {
      src = i;
    }
    s += in[src * stride + offset];
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) out[r] = neg_scale != nullptr ? -s * neg_scale[r] : s;
}

template <typename acc>
void launch_row_sum(const acc* in, acc* out, int64_t rows, int64_t items, int64_t C, int64_t splits, int stride,
                    int offset, RowMap map, const acc* neg_scale = nullptr) {
  if (rows == 0) return;
  const int threads = threads_for(items);
  row_sum_kernel<acc><<<static_cast<unsigned int>(rows), threads, 0, stream()>>>(in, out, items, C, splits, stride,
                                                                                  offset, map, neg_scale);
  SEMNORM_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------------------------
// channel_moments

// x_eff values of VEC consecutive elements at p of a plane, in acc.
// (z receives the noise values when NOISE.)
template <typename scalar_t, int VEC, bool NOISE>
__device__ __forceinline__ void load_effective(const scalar_t* __restrict__ xp, const acc_t<scalar_t>* __restrict__ zp,
                                               acc_t<scalar_t> s, int64_t p, acc_t<scalar_t> (&v)[VEC],
                                               acc_t<scalar_t> (&z)[VEC]) {
  using acc = acc_t<scalar_t>;
  scalar_t xv[VEC];
  load_vec<VEC>(xp + p, xv);
#pragma unroll
  for (int j = 0; j < VEC; ++j) v[j] = static_cast<acc>(xv[j]);
  if constexpr (NOISE) {
    load_vec<VEC>(zp + p, z);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] += s * z[j];
  }
}

// Shared scratch for block_welford (Welford has default member initializers, so it cannot be a
// __shared__ array itself): raw storage of the same layout.
#define SEMNORM_WELFORD_SCRATCH(acc, name)                  \
  __shared__ acc name##_raw[3 * (kThreads / kWarp)];        \
  Welford<acc>* name = reinterpret_cast<Welford<acc>*>(name##_raw)

// Shifted data: Welford runs on x_eff - shift with shift = x[r * HW], the first value of output row
// r's first plane (r = the plane per instance, the channel per batch: plane (0, c) is plane c), the
// same for every partial state of a row. A float32 state then holds the mean of values of the order
// of their spread, not of their offset (1000 + N(0, 1) keeps M2 to ~1e-7 instead of ~1e-5).
template <typename scalar_t>
__device__ __forceinline__ acc_t<scalar_t> moment_shift(const scalar_t* x, int64_t row, int64_t HW) {
  return static_cast<acc_t<scalar_t>>(x[row * HW]);
}

// One Welford state (of x_eff - shift) per block over its chunk; written to slot blockIdx.x, the mean
// shifted back when `finish` (one block per per-instance output), the count only when pcount.
template <typename scalar_t, int VEC, bool NOISE>
__global__ void moments_kernel(const scalar_t* __restrict__ x, const acc_t<scalar_t>* __restrict__ noise,
                               const acc_t<scalar_t>* __restrict__ scale, int64_t C, int64_t HW, int64_t splits,
                               int64_t chunk, bool per_instance, bool finish, acc_t<scalar_t>* __restrict__ pmean,
                               acc_t<scalar_t>* __restrict__ pm2, acc_t<scalar_t>* __restrict__ pcount) {
  using acc = acc_t<scalar_t>;
  SEMNORM_WELFORD_SCRATCH(acc, scratch);
  const int64_t plane = blockIdx.x / splits, split = blockIdx.x % splits;
  const int64_t n = plane / C, c = plane % C;
  const acc shift = moment_shift(x, per_instance ? plane : c, HW);
  const int64_t begin = split * chunk, end = min64(HW, begin + chunk);
  const scalar_t* xp = x + plane * HW;
  const acc* zp = NOISE ? noise + n * HW : nullptr;
  const acc s = NOISE ? scale[c] : acc(0);
  Welford<acc> w;
  // With VEC > 1, HW and chunk are multiples of VEC: every vector lies inside [begin, end).
  for (int64_t p = begin + static_cast<int64_t>(threadIdx.x) * VEC; p < end;
       p += static_cast<int64_t>(blockDim.x) * VEC) {
    acc v[VEC], z[VEC];
    load_effective<scalar_t, VEC, NOISE>(xp, zp, s, p, v, z);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] -= shift;
    if constexpr (VEC == 1) {
      w.add(v[0]);
    } else {
      acc sum = 0;
#pragma unroll
      for (int j = 0; j < VEC; ++j) sum += v[j];
      Welford<acc> o;
      o.count = acc(VEC);
      o.mean = sum / acc(VEC);
#pragma unroll
      for (int j = 0; j < VEC; ++j) o.m2 += (v[j] - o.mean) * (v[j] - o.mean);
      w.merge(o);
    }
  }
  w = block_welford(w, scratch);
  if (threadIdx.x == 0) {
    pmean[blockIdx.x] = finish ? shift + w.mean : w.mean;
    pm2[blockIdx.x] = w.m2;
    if (pcount != nullptr) pcount[blockIdx.x] = w.count;
  }
}

// Merges the partial (shifted) Welford states of row r (map as in row_sum_kernel) in a fixed order.
template <typename scalar_t, typename acc = acc_t<scalar_t>>
__global__ void moments_combine_kernel(const scalar_t* __restrict__ x, int64_t HW, const acc* __restrict__ pmean,
                                       const acc* __restrict__ pm2,
                                       const acc* __restrict__ pcount, acc* __restrict__ mean, acc* __restrict__ m2,
                                       int64_t items, int64_t C, int64_t splits, int map) {
  SEMNORM_WELFORD_SCRATCH(acc, scratch);
  const int64_t r = blockIdx.x;
  Welford<acc> w;
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    const int64_t src = map == kPerPlane ? r * splits + i : ((i / splits) * C + r) * splits + i % splits;
    Welford<acc> o;
    o.mean = pmean[src];
    o.m2 = pm2[src];
    o.count = pcount[src];
    w.merge(o);
  }
  w = block_welford(w, scratch);
  if (threadIdx.x == 0) {
    mean[r] = moment_shift(x, r, HW) + w.mean;
    m2[r] = w.m2;
  }
}

std::tuple<Tensor, Tensor> channel_moments_cuda(const Tensor& x, bool per_instance, const std::optional<Tensor>& noise,
                                                const std::optional<Tensor>& noise_scale) {
  constexpr const char* op = "channel_moments";
  check_activation(x, op);
  Tensor nz, ns;
  std::tie(nz, ns) = check_noise(noise, noise_scale, x, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const Tensor xc = x.contiguous();
  const auto opts = x.options().dtype(opmath_dtype(x.scalar_type()));
  const std::vector<int64_t> shape = per_instance ? std::vector<int64_t>{N, C} : std::vector<int64_t>{C};
  Tensor mean = at::empty(shape, opts), m2 = at::empty(shape, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_channel_moments_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const acc* zp = nz.defined() ? nz.data_ptr<acc>() : nullptr;
    const acc* sp = ns.defined() ? ns.data_ptr<acc>() : nullptr;
    const int vec = (HW % 4 == 0 && vec_aligned(xp, 4) && vec_aligned(zp, 4)) ? 4 : 1;
    const PlaneGrid g = plane_grid(N * C, HW, vec);
    // One block per plane writes the per-instance result directly; else partial states + a merge.
    const bool direct = per_instance && g.splits == 1;
    Tensor pmean, pm2, pcount;
    if (!direct) {
      pmean = at::empty({g.blocks}, opts);
      pm2 = at::empty({g.blocks}, opts);
      pcount = at::empty({g.blocks}, opts);
    }
    acc* om = direct ? mean.data_ptr<acc>() : pmean.data_ptr<acc>();
    acc* o2 = direct ? m2.data_ptr<acc>() : pm2.data_ptr<acc>();
    acc* oc = direct ? nullptr : pcount.data_ptr<acc>();
    dispatch_bool(nz.defined(), [&](auto noise_flag) {
      constexpr bool NOISE = decltype(noise_flag)::value;
      if (vec == 4) {
        moments_kernel<scalar_t, 4, NOISE><<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(
            xp, zp, sp, C, HW, g.splits, g.chunk, per_instance, direct, om, o2, oc);
      } else {
        moments_kernel<scalar_t, 1, NOISE><<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(
            xp, zp, sp, C, HW, g.splits, g.chunk, per_instance, direct, om, o2, oc);
      }
      SEMNORM_CUDA_CHECK_LAUNCH();
    });
    if (!direct) {
      const int64_t rows = per_instance ? N * C : C;
      const int64_t items = per_instance ? g.splits : N * g.splits;
      const int threads = threads_for(items);
      moments_combine_kernel<scalar_t><<<static_cast<unsigned int>(rows), threads, 0, stream()>>>(
          xp, HW, pmean.data_ptr<acc>(), pm2.data_ptr<acc>(), pcount.data_ptr<acc>(), mean.data_ptr<acc>(),
          m2.data_ptr<acc>(), items, C, g.splits, per_instance ? kPerPlane : kPerChannel);
      SEMNORM_CUDA_CHECK_LAUNCH();
    }
  });
  return {mean, m2};
}

// grad_x = grad_mean / M + 2 * grad_m2 * (x_eff - mean), in acc before rounding; with noise, the block
// sum of grad_x * noise goes to partial[blockIdx.x].
template <typename scalar_t, int VEC, bool NOISE>
__global__ void moments_backward_kernel(const acc_t<scalar_t>* __restrict__ gmean,
                                        const acc_t<scalar_t>* __restrict__ gm2, const scalar_t* __restrict__ x,
                                        const acc_t<scalar_t>* __restrict__ mean,
                                        const acc_t<scalar_t>* __restrict__ noise,
                                        const acc_t<scalar_t>* __restrict__ scale, scalar_t* __restrict__ gx,
                                        acc_t<scalar_t>* __restrict__ partial, bool per_instance,
                                        acc_t<scalar_t> inv_count, int64_t C, int64_t HW, int64_t splits,
                                        int64_t chunk) {
  using acc = acc_t<scalar_t>;
  __shared__ acc scratch[kThreads / kWarp];
  const int64_t plane = blockIdx.x / splits, split = blockIdx.x % splits;
  const int64_t n = plane / C, c = plane % C, k = per_instance ? plane : c;
  const int64_t begin = split * chunk, end = min64(HW, begin + chunk);
  const acc a = gmean[k] * inv_count, b = acc(2) * gm2[k], mu = mean[k];
  const acc s = NOISE ? scale[c] : acc(0);
  const scalar_t* xp = x + plane * HW;
  const acc* zp = NOISE ? noise + n * HW : nullptr;
  scalar_t* gp = gx + plane * HW;
  acc sum = 0;
  for (int64_t p = begin + static_cast<int64_t>(threadIdx.x) * VEC; p < end;
       p += static_cast<int64_t>(blockDim.x) * VEC) {
    acc v[VEC], z[VEC];
    load_effective<scalar_t, VEC, NOISE>(xp, zp, s, p, v, z);
    scalar_t out[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc g = a + b * (v[j] - mu);
      out[j] = static_cast<scalar_t>(g);
      if constexpr (NOISE) sum += g * z[j];
    }
    store_vec<VEC>(gp + p, out);
  }
  if constexpr (NOISE) {
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = sum;
  }
}

std::tuple<Tensor, Tensor> channel_moments_backward_cuda(const Tensor& grad_mean, const Tensor& grad_m2,
                                                         const Tensor& x, const Tensor& mean, bool per_instance,
                                                         const std::optional<Tensor>& noise,
                                                         const std::optional<Tensor>& noise_scale) {
  constexpr const char* op = "channel_moments_backward";
  check_activation(x, op);
  const Tensor gmean = check_moment(grad_mean, x, per_instance, op, "grad_mean");
  const Tensor gm2 = check_moment(grad_m2, x, per_instance, op, "grad_m2");
  const Tensor mu = check_moment(mean, x, per_instance, op, "mean");
  Tensor nz, ns;
  std::tie(nz, ns) = check_noise(noise, noise_scale, x, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const Tensor xc = x.contiguous();
  const auto opts = x.options().dtype(opmath_dtype(x.scalar_type()));
  Tensor grad_x = at::empty({N, C, x.size(2), x.size(3)}, x.options());
  Tensor grad_scale = at::empty({nz.defined() ? C : 0}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_channel_moments_backward_cuda",
                                  [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    scalar_t* gp = grad_x.data_ptr<scalar_t>();
    const acc* zp = nz.defined() ? nz.data_ptr<acc>() : nullptr;
    const acc* sp = ns.defined() ? ns.data_ptr<acc>() : nullptr;
    const int vec = (HW % 4 == 0 && vec_aligned(xp, 4) && vec_aligned(gp, 4) && vec_aligned(zp, 4)) ? 4 : 1;
    const PlaneGrid g = plane_grid(N * C, HW, vec);
    Tensor partial = nz.defined() ? at::empty({g.blocks}, opts) : Tensor();
    acc* pp = nz.defined() ? partial.data_ptr<acc>() : nullptr;
    const acc inv_count = acc(1) / static_cast<acc>(per_instance ? HW : N * HW);
    dispatch_bool(nz.defined(), [&](auto noise_flag) {
      constexpr bool NOISE = decltype(noise_flag)::value;
      if (vec == 4) {
        moments_backward_kernel<scalar_t, 4, NOISE><<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(
            gmean.data_ptr<acc>(), gm2.data_ptr<acc>(), xp, mu.data_ptr<acc>(), zp, sp, gp, pp, per_instance,
            inv_count, C, HW, g.splits, g.chunk);
      } else {
        moments_backward_kernel<scalar_t, 1, NOISE><<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(
            gmean.data_ptr<acc>(), gm2.data_ptr<acc>(), xp, mu.data_ptr<acc>(), zp, sp, gp, pp, per_instance,
            inv_count, C, HW, g.splits, g.chunk);
      }
      SEMNORM_CUDA_CHECK_LAUNCH();
    });
    if (nz.defined()) launch_row_sum<acc>(pp, grad_scale.data_ptr<acc>(), C, N * g.splits, C, g.splits, 1, 0, kPerChannel);
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
  const acc* blend;  // (2,) on the device, or null
  const acc* noise;
  const acc* scale;
  acc offset;
  int64_t C, HW, splits, chunk;
};

template <typename scalar_t, int VEC, bool BLEND, bool NOISE>
__global__ void modulate_forward_kernel(const ModulateArgs<scalar_t> A, scalar_t* __restrict__ y) {
  using acc = acc_t<scalar_t>;
  const int64_t plane = blockIdx.x / A.splits, split = blockIdx.x % A.splits;
  const int64_t n = plane / A.C, c = plane % A.C, base = plane * A.HW;
  const int64_t begin = split * A.chunk, end = min64(A.HW, begin + A.chunk);
  const acc mu = A.mean[plane], r = A.rstd[plane], off = A.offset;
  const acc bg = BLEND ? A.blend[0] : acc(1), bb = BLEND ? A.blend[1] : acc(1);
  const acc s = NOISE ? A.scale[c] : acc(0);
  const acc* zp = NOISE ? A.noise + n * A.HW : nullptr;
  for (int64_t p = begin + static_cast<int64_t>(threadIdx.x) * VEC; p < end;
       p += static_cast<int64_t>(blockDim.x) * VEC) {
    acc xe[VEC], z[VEC];
    load_effective<scalar_t, VEC, NOISE>(A.x + base, zp, s, p, xe, z);
    scalar_t gv[VEC], bv[VEC], g2v[VEC], b2v[VEC], out[VEC];
    load_vec<VEC>(A.gamma + base + p, gv);
    load_vec<VEC>(A.beta + base + p, bv);
    if constexpr (BLEND) {
      load_vec<VEC>(A.gamma2 + base + p, g2v);
      load_vec<VEC>(A.beta2 + base + p, b2v);
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      acc g = static_cast<acc>(gv[j]), b = static_cast<acc>(bv[j]);
      if constexpr (BLEND) {
        g = bg * g + (acc(1) - bg) * static_cast<acc>(g2v[j]);
        b = bb * b + (acc(1) - bb) * static_cast<acc>(b2v[j]);
      }
      out[j] = static_cast<scalar_t>((xe[j] - mu) * r * (off + g) + b);
    }
    store_vec<VEC>(y + base + p, out);
  }
}

template <typename scalar_t>
struct ModulateGrads {
  using acc = acc_t<scalar_t>;
  scalar_t* x;
  scalar_t* gamma;
  scalar_t* beta;
  scalar_t* gamma2;
  scalar_t* beta2;
  acc* partial;  // (blocks, 5): dy*(off+g), dy*(off+g)*(x_eff-mean), blend[0], blend[1], noise_scale
};

constexpr int kModParts = 5;

// Elementwise gradients of one chunk plus the block's five partial sums (unused ones are zero).
template <typename scalar_t, int VEC, bool BLEND, bool NOISE>
__global__ void modulate_backward_kernel(const scalar_t* __restrict__ dy, const ModulateArgs<scalar_t> A,
                                         const ModulateGrads<scalar_t> G) {
  using acc = acc_t<scalar_t>;
  __shared__ acc scratch[kThreads / kWarp];
  const int64_t plane = blockIdx.x / A.splits, split = blockIdx.x % A.splits;
  const int64_t n = plane / A.C, c = plane % A.C, base = plane * A.HW;
  const int64_t begin = split * A.chunk, end = min64(A.HW, begin + A.chunk);
  const acc mu = A.mean[plane], r = A.rstd[plane], off = A.offset;
  const acc bg = BLEND ? A.blend[0] : acc(1), bb = BLEND ? A.blend[1] : acc(1);
  const acc s = NOISE ? A.scale[c] : acc(0);
  const acc* zp = NOISE ? A.noise + n * A.HW : nullptr;
  acc sdg = 0, sdgx = 0, sbg = 0, sbb = 0, sns = 0;
  for (int64_t p = begin + static_cast<int64_t>(threadIdx.x) * VEC; p < end;
       p += static_cast<int64_t>(blockDim.x) * VEC) {
    const int64_t q = base + p;
    acc xe[VEC], z[VEC];
    load_effective<scalar_t, VEC, NOISE>(A.x + base, zp, s, p, xe, z);
    scalar_t dv[VEC], gv[VEC], g2v[VEC], bv[VEC], b2v[VEC];
    load_vec<VEC>(dy + q, dv);
    load_vec<VEC>(A.gamma + q, gv);
    if constexpr (BLEND) {
      load_vec<VEC>(A.gamma2 + q, g2v);
      load_vec<VEC>(A.beta + q, bv);
      load_vec<VEC>(A.beta2 + q, b2v);
    }
    scalar_t ox[VEC], og[VEC], ob[VEC], og2[VEC], ob2[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc d = static_cast<acc>(dv[j]), xcen = xe[j] - mu;
      const acc g1 = static_cast<acc>(gv[j]);
      acc g = g1, g2 = 0;
      if constexpr (BLEND) {
        g2 = static_cast<acc>(g2v[j]);
        g = bg * g1 + (acc(1) - bg) * g2;
      }
      const acc dg = d * (off + g), gxv = dg * r, dxhat = d * xcen * r;
      ox[j] = static_cast<scalar_t>(gxv);
      sdg += dg;
      sdgx += dg * xcen;
      if constexpr (BLEND) {
        og[j] = static_cast<scalar_t>(bg * dxhat);
        og2[j] = static_cast<scalar_t>((acc(1) - bg) * dxhat);
        ob[j] = static_cast<scalar_t>(bb * d);
        ob2[j] = static_cast<scalar_t>((acc(1) - bb) * d);
        sbg += dxhat * (g1 - g2);
        sbb += d * (static_cast<acc>(bv[j]) - static_cast<acc>(b2v[j]));
      } else {
        og[j] = static_cast<scalar_t>(dxhat);  // grad_beta is grad_y itself: not written
      }
      if constexpr (NOISE) sns += gxv * z[j];
    }
    store_vec<VEC>(G.x + q, ox);
    store_vec<VEC>(G.gamma + q, og);
    if constexpr (BLEND) {
      store_vec<VEC>(G.beta + q, ob);
      store_vec<VEC>(G.gamma2 + q, og2);
      store_vec<VEC>(G.beta2 + q, ob2);
    }
  }
  // Every thread of the block reaches these (no early exit above): block_sum synchronizes.
  acc* part = G.partial + blockIdx.x * kModParts;
  sdg = block_sum(sdg, scratch);
  if (threadIdx.x == 0) part[0] = sdg;
  sdgx = block_sum(sdgx, scratch);
  if (threadIdx.x == 0) part[1] = sdgx;
  if constexpr (BLEND) {
    sbg = block_sum(sbg, scratch);
    sbb = block_sum(sbb, scratch);
  }
  if constexpr (NOISE) sns = block_sum(sns, scratch);
  if (threadIdx.x == 0) {
    part[2] = sbg;
    part[3] = sbb;
    part[4] = sns;
  }
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
  A.blend = in.blend.defined() ? in.blend.data_ptr<acc>() : nullptr;
  A.noise = in.noise.defined() ? in.noise.data_ptr<acc>() : nullptr;
  A.scale = in.scale.defined() ? in.scale.data_ptr<acc>() : nullptr;
  A.offset = static_cast<acc>(offset);
  A.C = in.x.size(1);
  A.HW = in.x.size(2) * in.x.size(3);
  A.splits = 1;
  A.chunk = A.HW;
  return A;
}

template <typename scalar_t>
bool modulate_vec_ok(const ModulateArgs<scalar_t>& A) {
  return A.HW % 4 == 0 && vec_aligned(A.x, 4) && vec_aligned(A.gamma, 4) && vec_aligned(A.beta, 4) &&
         vec_aligned(A.gamma2, 4) && vec_aligned(A.beta2, 4) && vec_aligned(A.noise, 4);
}

Tensor normalize_modulate_cuda(const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& gamma,
                               const Tensor& beta, const std::optional<Tensor>& gamma2,
                               const std::optional<Tensor>& beta2, const std::optional<Tensor>& blend,
                               const std::optional<Tensor>& noise, const std::optional<Tensor>& noise_scale,
                               double offset, int64_t stats_of_x) {
  constexpr const char* op = "normalize_modulate";
  check_stats_of_x(stats_of_x, op);
  const ModulateInputs in = check_modulate(x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const Tensor mc = mean.contiguous(), rc = rstd.contiguous();
  Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_normalize_modulate_cuda", [&] {
    auto A = modulate_args<scalar_t>(in, mc, rc, offset);
    scalar_t* yp = y.data_ptr<scalar_t>();
    const int vec = modulate_vec_ok(A) && vec_aligned(yp, 4) ? 4 : 1;
    const PlaneGrid g = plane_grid(x.size(0) * A.C, A.HW, vec);
    A.splits = g.splits;
    A.chunk = g.chunk;
    dispatch_bool(in.blend.defined(), [&](auto blend_flag) {
      dispatch_bool(in.noise.defined(), [&](auto noise_flag) {
        constexpr bool BLEND = decltype(blend_flag)::value, NOISE = decltype(noise_flag)::value;
        if (vec == 4) {
          modulate_forward_kernel<scalar_t, 4, BLEND, NOISE>
              <<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(A, yp);
        } else {
          modulate_forward_kernel<scalar_t, 1, BLEND, NOISE>
              <<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(A, yp);
        }
        SEMNORM_CUDA_CHECK_LAUNCH();
      });
    });
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> normalize_modulate_backward_cuda(
    const Tensor& grad_y, const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& gamma,
    const Tensor& beta, const std::optional<Tensor>& gamma2, const std::optional<Tensor>& beta2,
    const std::optional<Tensor>& blend, const std::optional<Tensor>& noise, const std::optional<Tensor>& noise_scale,
    double offset) {
  constexpr const char* op = "normalize_modulate_backward";
  const ModulateInputs in = check_modulate(x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, op);
  const Tensor dy = check_dense(grad_y, x, op, "grad_y");
  const c10::cuda::CUDAGuard guard(x.device());
  const Tensor mc = mean.contiguous(), rc = rstd.contiguous();
  const int64_t N = x.size(0), C = x.size(1);
  const bool has_blend = in.blend.defined(), has_noise = in.noise.defined();
  const auto xopts = x.options().memory_format(at::MemoryFormat::Contiguous);
  const auto opts = x.options().dtype(opmath_dtype(x.scalar_type()));
  Tensor gx = at::empty(x.sizes(), xopts), gmean = at::empty({N, C}, opts), grstd = at::empty({N, C}, opts);
  // without a blend grad_beta equals grad_y: an empty output, and the autograd formula passes grad_y on
  Tensor ggamma = at::empty(x.sizes(), xopts), gbeta = has_blend ? at::empty(x.sizes(), xopts) : at::empty({0}, xopts);
  Tensor ggamma2 = has_blend ? at::empty(x.sizes(), xopts) : at::empty({0}, xopts);
  Tensor gbeta2 = has_blend ? at::empty(x.sizes(), xopts) : at::empty({0}, xopts);
  Tensor gblend = at::empty({has_blend ? 2 : 0}, opts), gscale = at::empty({has_noise ? C : 0}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "semnorm_normalize_modulate_backward_cuda",
                                  [&] {
    using acc = acc_t<scalar_t>;
    auto A = modulate_args<scalar_t>(in, mc, rc, offset);
    ModulateGrads<scalar_t> G;
    G.x = gx.data_ptr<scalar_t>();
    G.gamma = ggamma.data_ptr<scalar_t>();
    G.beta = has_blend ? gbeta.data_ptr<scalar_t>() : nullptr;
    G.gamma2 = has_blend ? ggamma2.data_ptr<scalar_t>() : nullptr;
    G.beta2 = has_blend ? gbeta2.data_ptr<scalar_t>() : nullptr;
    const scalar_t* dp = dy.data_ptr<scalar_t>();
    const int vec = modulate_vec_ok(A) && vec_aligned(dp, 4) && vec_aligned(G.x, 4) && vec_aligned(G.gamma, 4) &&
                            vec_aligned(G.beta, 4) && vec_aligned(G.gamma2, 4) && vec_aligned(G.beta2, 4)
                        ? 4
                        : 1;
    const PlaneGrid g = plane_grid(N * C, A.HW, vec);
    A.splits = g.splits;
    A.chunk = g.chunk;
    Tensor partial = at::empty({g.blocks, kModParts}, opts);
    G.partial = partial.data_ptr<acc>();
    dispatch_bool(has_blend, [&](auto blend_flag) {
      dispatch_bool(has_noise, [&](auto noise_flag) {
        constexpr bool BLEND = decltype(blend_flag)::value, NOISE = decltype(noise_flag)::value;
        if (vec == 4) {
          modulate_backward_kernel<scalar_t, 4, BLEND, NOISE>
              <<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(dp, A, G);
        } else {
          modulate_backward_kernel<scalar_t, 1, BLEND, NOISE>
              <<<static_cast<unsigned int>(g.blocks), g.threads, 0, stream()>>>(dp, A, G);
        }
        SEMNORM_CUDA_CHECK_LAUNCH();
      });
    });
    const acc* pp = G.partial;
    // grad_mean = -rstd * sum dy*(off+g); grad_rstd = sum dy*(off+g)*(x_eff-mean), per plane.
    launch_row_sum<acc>(pp, gmean.data_ptr<acc>(), N * C, g.splits, C, g.splits, kModParts, 0, kPerPlane, A.rstd);
    launch_row_sum<acc>(pp, grstd.data_ptr<acc>(), N * C, g.splits, C, g.splits, kModParts, 1, kPerPlane);
    if (has_blend) {
      launch_row_sum<acc>(pp, gblend.data_ptr<acc>(), 1, g.blocks, C, g.splits, kModParts, 2, kAll);
      launch_row_sum<acc>(pp, gblend.data_ptr<acc>() + 1, 1, g.blocks, C, g.splits, kModParts, 3, kAll);
    }
    if (has_noise)
      launch_row_sum<acc>(pp, gscale.data_ptr<acc>(), C, N * g.splits, C, g.splits, kModParts, 4, kPerChannel);
  });
  return {gx, gmean, grstd, ggamma, gbeta, ggamma2, gbeta2, gblend, gscale};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(semnorm, CUDA, m) {
  m.impl("channel_moments", &cuda::channel_moments_cuda);
  m.impl("channel_moments_backward", &cuda::channel_moments_backward_cuda);
  m.impl("normalize_modulate", &cuda::normalize_modulate_cuda);
  m.impl("normalize_modulate_backward", &cuda::normalize_modulate_backward_cuda);
}

}  // namespace semnorm
