// CLADE-ICPE's intra-class positional map on CUDA: the twin of csrc/cpu/positional_kernel.cpp (same
// checks, same output bit for bit).
//
// 1. Negative labels (signed label dtypes only): the smallest flat index of a negative label by an
//    integer atomicMin, then one 8-byte device-to-host copy (the op's only host synchronisation;
//    none for uint8 labels).
// 2. 8-connected components of every class by union-find on the GPU (Playne & Hawick 2018,
//    Komura 2015): every pixel starts as its own root; each pixel joins its already-scanned
//    same-label neighbours (W, NW, N, NE, with the CPU kernel's reduced rule: N alone when N matches,
//    else W or NW, plus NE), by a lock-free union whose links are atomicMin on the parent array, so
//    parent[q] <= q holds throughout and a root is the smallest index of its component. The set of
//    unions depends only on the labels, so the partition equals the CPU kernel's. Then every pixel
//    points at its root (path flattening).
// 3. Per component: pixel count and sums of rows / columns with 64-bit integer atomicAdd (exact,
//    order independent), centroids in float64 as the CPU computes them, then the largest absolute
//    offset per axis with a 64-bit integer atomicMax on the bit pattern of the non-negative double
//    (order independent), and the normalised offsets. No floating-point atomics: deterministic.
//    The lanes of a warp that hit the same component are aggregated first (one atomic per group).
// Tables are indexed by (image, root pixel): 5 x 8 bytes per pixel of scratch.
#include "common.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <type_traits>

namespace semnorm {
namespace cuda {
namespace {

constexpr const char* kOp = "intra_class_positional";

template <typename label_t>
__global__ void first_negative_kernel(const label_t* __restrict__ labels, int64_t numel,
                                      unsigned long long* __restrict__ first_bad) {
  SEMNORM_GRID_STRIDE(i, numel) {
    if (static_cast<int64_t>(labels[i]) < 0) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
}

// Root of p. Parents change concurrently during the merge: volatile reads (L2, not a stale L1 line).
// A stale value is still an ancestor (links only ever go to smaller indices of the same component).
__device__ __forceinline__ int32_t find_root(const int32_t* parent, int32_t p) {
  const volatile int32_t* par = parent;
  int32_t q = par[p];
  while (q != p) {
    p = q;
    q = par[p];
  }
  return p;
}

// Joins the trees of a and b: the larger root is linked to the smaller one with atomicMin; if
// another thread relinked that root meanwhile, retry from what it found (the old parent).
__device__ __forceinline__ void unite(int32_t* parent, int32_t a, int32_t b) {
  bool done = false;
  while (!done) {
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a < b) {
      const int32_t old = atomicMin(parent + b, a);
      done = old == b;
      b = old;
    } else if (b < a) {
      const int32_t old = atomicMin(parent + a, b);
      done = old == a;
      a = old;
    } else {
      done = true;
    }
  }
}

template <typename label_t>
__device__ __forceinline__ bool is_ignored(label_t v, int64_t ignore) {
  return static_cast<int64_t>(v) == ignore;
}

template <typename label_t>
__global__ void init_parents_kernel(const label_t* __restrict__ labels, int32_t* __restrict__ parent, int64_t total,
                                    int64_t HW, int64_t ignore) {
  SEMNORM_GRID_STRIDE(i, total) {
    parent[i] = is_ignored(labels[i], ignore) ? -1 : static_cast<int32_t>(i % HW);
  }
}

template <typename label_t>
__global__ void merge_kernel(const label_t* __restrict__ labels, int32_t* __restrict__ parent, int64_t total,
                             int64_t H, int64_t W, int64_t ignore) {
  const int64_t HW = H * W;
  SEMNORM_GRID_STRIDE(i, total) {
    const label_t v = labels[i];
    if (is_ignored(v, ignore)) continue;
    const int64_t n = i / HW, p = i % HW, h = p / W, w = p % W;
    int32_t* par = parent + n * HW;
    const int32_t pi = static_cast<int32_t>(p), wi = static_cast<int32_t>(W);
    const bool has_w = w > 0 && labels[i - 1] == v;
    if (h > 0) {
      if (labels[i - W] == v) {  // N: W, NW and NE are joined to N through their own unions
        unite(par, pi, pi - wi);
        continue;
      }
      const bool has_nw = w > 0 && labels[i - W - 1] == v;
      const bool has_ne = w + 1 < W && labels[i - W + 1] == v;
      if (has_w) {
        unite(par, pi, pi - 1);
      } else if (has_nw) {
        unite(par, pi, pi - wi - 1);
      }
      if (has_ne) unite(par, pi, pi - wi + 1);
    } else if (has_w) {
      unite(par, pi, pi - 1);
    }
  }
}

// Scratch tables, (5, N * HW) 64-bit: count, row sum, column sum, max |row offset|, max |col offset|
// (the last two as bit patterns of non-negative doubles), indexed by image * HW + root.
struct Tables {
  unsigned long long *count, *sum_row, *sum_col, *max_row, *max_col;
};

// Warp aggregation of the table updates: the lanes of a warp that update the same component (most
// of them: a warp covers 32 consecutive pixels) combine their values with warp intrinsics and one
// lane does the atomic, so a large component does not serialise every pixel on one address. The
// lanes are grouped by __match_any_sync over the lanes converged at that point (__activemask; lanes
// that diverged just form smaller groups). Integer values only: the results are exact and
// identical to per-pixel atomics. sm_80+ (__reduce_*_sync); plain per-pixel atomics below.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define SEMNORM_WARP_AGGREGATE 1
#else
#define SEMNORM_WARP_AGGREGATE 0
#endif

// count += pixels, sum_row += rows, sum_col += columns of component k (k < 0: nothing to add).
__device__ __forceinline__ void add_to_component(const Tables& T, int64_t k, unsigned int row, unsigned int col) {
#if SEMNORM_WARP_AGGREGATE
  const unsigned int active = __activemask();
  const unsigned int peers = __match_any_sync(active, static_cast<unsigned long long>(k));
  // Sums of at most 32 rows (columns) below 2^26 (checked by the host) fit in 32 bits.
  const unsigned int pixels = static_cast<unsigned int>(__popc(peers));
  const unsigned int rows = __reduce_add_sync(peers, row);
  const unsigned int cols = __reduce_add_sync(peers, col);
  const bool leader = static_cast<int>(threadIdx.x % kWarp) == __ffs(peers) - 1;
  if (leader && k >= 0) {
    atomicAdd(T.count + k, static_cast<unsigned long long>(pixels));
    atomicAdd(T.sum_row + k, static_cast<unsigned long long>(rows));
    atomicAdd(T.sum_col + k, static_cast<unsigned long long>(cols));
  }
#else
  if (k >= 0) {
    atomicAdd(T.count + k, 1ull);
    atomicAdd(T.sum_row + k, static_cast<unsigned long long>(row));
    atomicAdd(T.sum_col + k, static_cast<unsigned long long>(col));
  }
#endif
}

__global__ void flatten_and_sum_kernel(int32_t* __restrict__ parent, Tables T, int64_t total, int64_t H, int64_t W) {
  const int64_t HW = H * W;
  SEMNORM_GRID_STRIDE(i, total) {
    const int64_t n = i / HW, p = i % HW;
    int64_t k = -1;
    if (parent[i] >= 0) {  // ignored (-1): set by init, never changed
      int32_t* par = parent + n * HW;
      const int32_t root = find_root(par, static_cast<int32_t>(p));
      parent[i] = root;  // another thread may be walking through p: root is still an ancestor of p
      k = n * HW + root;
    }
    add_to_component(T, k, static_cast<unsigned int>(p / W), static_cast<unsigned int>(p % W));
  }
}

__device__ __forceinline__ double centroid(const Tables& T, int64_t k, bool row) {
  return static_cast<double>((row ? T.sum_row : T.sum_col)[k]) / static_cast<double>(T.count[k]);
}

// max |row - centroid| over the component's pixels is reached at its smallest or largest row, so a
// warp group reduces rows and columns to their extremes (integers, exact) and its leader evaluates
// the same double expressions the per-pixel form would: identical results.
__device__ __forceinline__ void max_into(unsigned long long* slot, double offset) {
  // Non-negative doubles order like their bit patterns as unsigned integers.
  atomicMax(slot, static_cast<unsigned long long>(__double_as_longlong(offset)));
}

__global__ void max_offset_kernel(const int32_t* __restrict__ parent, Tables T, int64_t total, int64_t H, int64_t W) {
  const int64_t HW = H * W;
  SEMNORM_GRID_STRIDE(i, total) {
    const int32_t root = parent[i];
    const int64_t n = i / HW, p = i % HW, k = root < 0 ? -1 : n * HW + root;
    const unsigned int row = static_cast<unsigned int>(p / W), col = static_cast<unsigned int>(p % W);
#if SEMNORM_WARP_AGGREGATE
    const unsigned int active = __activemask();
    const unsigned int peers = __match_any_sync(active, static_cast<unsigned long long>(k));
    const unsigned int row_lo = __reduce_min_sync(peers, row), row_hi = __reduce_max_sync(peers, row);
    const unsigned int col_lo = __reduce_min_sync(peers, col), col_hi = __reduce_max_sync(peers, col);
    const bool leader = static_cast<int>(threadIdx.x % kWarp) == __ffs(peers) - 1;
    if (leader && k >= 0) {
      const double cr = centroid(T, k, true), cc = centroid(T, k, false);
      max_into(T.max_row + k, fmax(fabs(static_cast<double>(row_lo) - cr), fabs(static_cast<double>(row_hi) - cr)));
      max_into(T.max_col + k, fmax(fabs(static_cast<double>(col_lo) - cc), fabs(static_cast<double>(col_hi) - cc)));
    }
#else
    if (k >= 0) {
      max_into(T.max_row + k, fabs(static_cast<double>(row) - centroid(T, k, true)));
      max_into(T.max_col + k, fabs(static_cast<double>(col) - centroid(T, k, false)));
    }
#endif
  }
}

// D[n, 0] = row offset / (max |row offset| + eps), D[n, 1] likewise for columns (0 where the
// denominator is 0); ignored pixels 0. The CPU kernel's arithmetic, in the same order.
__global__ void positional_output_kernel(const int32_t* __restrict__ parent, Tables T, float* __restrict__ out,
                                         int64_t total, int64_t H, int64_t W, double eps) {
  const int64_t HW = H * W;
  SEMNORM_GRID_STRIDE(i, total) {
    const int64_t n = i / HW, p = i % HW;
    float* d_row = out + n * 2 * HW + p;
    float* d_col = d_row + HW;
    const int32_t root = parent[i];
    if (root < 0) {
      *d_row = 0.f;
      *d_col = 0.f;
      continue;
    }
    const int64_t k = n * HW + root;
    const double den_r = __longlong_as_double(static_cast<long long>(T.max_row[k])) + eps;
    const double den_c = __longlong_as_double(static_cast<long long>(T.max_col[k])) + eps;
    const double inv_r = den_r > 0 ? 1.0 / den_r : 0.0;
    const double inv_c = den_c > 0 ? 1.0 / den_c : 0.0;
    *d_row = static_cast<float>((static_cast<double>(p / W) - centroid(T, k, true)) * inv_r);
    *d_col = static_cast<float>((static_cast<double>(p % W) - centroid(T, k, false)) * inv_c);
  }
}

Tensor intra_class_positional_cuda(const Tensor& labels, int64_t ignore_label, double eps) {
  check_defined(labels, kOp, "labels");
  TORCH_CHECK(labels.is_cuda(), "semnorm.", kOp, ": the CUDA kernel got labels on ", labels.device());
  check_dim(labels, 3, kOp, "labels");
  check_nonempty(labels, kOp, "labels");
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, "semnorm.", kOp, ": eps must be finite and non-negative, got ",
                    eps);
  const int64_t N = labels.size(0), H = labels.size(1), W = labels.size(2), HW = H * W, total = N * HW;
  TORCH_CHECK(HW <= std::numeric_limits<int32_t>::max(), "semnorm.", kOp,
              ": labels must have fewer than 2^31 pixels per image, got ", H, " x ", W);
  // Warp sums of 32 rows (columns) in 32 bits: each axis below 2^26 (far above any image).
  TORCH_CHECK(H < (int64_t(1) << 26) && W < (int64_t(1) << 26), "semnorm.", kOp,
              ": the CUDA kernel supports images of fewer than 2^26 rows and columns, got ", H, " x ", W);
  const c10::cuda::CUDAGuard guard(labels.device());
  const Tensor lab = labels.contiguous();
  Tensor out = at::empty({N, 2, H, W}, lab.options().dtype(at::kFloat));
  dispatch_label_type(lab.scalar_type(), kOp, [&](auto tag) {
    using label_t = decltype(tag);
    const label_t* lp = lab.data_ptr<label_t>();
    if constexpr (std::is_signed_v<label_t>) {
      const auto none = std::numeric_limits<int64_t>::max();
      Tensor first_bad = at::full({1}, none, lab.options().dtype(at::kLong));
      first_negative_kernel<label_t><<<grid_for(total), kThreads, 0, stream()>>>(
          lp, total, reinterpret_cast<unsigned long long*>(first_bad.data_ptr<int64_t>()));
      SEMNORM_CUDA_CHECK_LAUNCH();
      const int64_t bad = first_bad.item<int64_t>();
      if (bad != none) {
        const int64_t value = lab.reshape({-1})[bad].item<int64_t>();
        TORCH_CHECK_VALUE(false, "semnorm.", kOp, ": labels must be non-negative, found ", value, " at flat index ",
                          bad);
      }
    }
    Tensor parent = at::empty({total}, lab.options().dtype(at::kInt));
    Tensor tables = at::zeros({5, total}, lab.options().dtype(at::kLong));
    auto* tp = reinterpret_cast<unsigned long long*>(tables.data_ptr<int64_t>());
    const Tables T{tp, tp + total, tp + 2 * total, tp + 3 * total, tp + 4 * total};
    int32_t* pp = parent.data_ptr<int32_t>();
    const unsigned int blocks = grid_for(total);
    init_parents_kernel<label_t><<<blocks, kThreads, 0, stream()>>>(lp, pp, total, HW, ignore_label);
    SEMNORM_CUDA_CHECK_LAUNCH();
    merge_kernel<label_t><<<blocks, kThreads, 0, stream()>>>(lp, pp, total, H, W, ignore_label);
    SEMNORM_CUDA_CHECK_LAUNCH();
    flatten_and_sum_kernel<<<blocks, kThreads, 0, stream()>>>(pp, T, total, H, W);
    SEMNORM_CUDA_CHECK_LAUNCH();
    max_offset_kernel<<<blocks, kThreads, 0, stream()>>>(pp, T, total, H, W);
    SEMNORM_CUDA_CHECK_LAUNCH();
    positional_output_kernel<<<blocks, kThreads, 0, stream()>>>(pp, T, out.data_ptr<float>(), total, H, W, eps);
    SEMNORM_CUDA_CHECK_LAUNCH();
  });
  return out;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(semnorm, CUDA, m) {
  m.impl("intra_class_positional", &cuda::intra_class_positional_cuda);
}

}  // namespace semnorm
