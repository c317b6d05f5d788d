// Helpers shared by every semnorm CUDA kernel: launch geometry, the current stream, warp/block
// reductions in the accumulation type, and the deterministic-algorithms switch.
//
// Reductions into small per-class or per-region tables (bank gradients, region sums) come in two
// forms in this code base: a fast one with atomicAdd (order-dependent rounding in float32) and a
// deterministic one (per-block partial sums in a fixed order, then a second pass) selected by
// `deterministic()`, i.e. torch.use_deterministic_algorithms(True). Each kernel file says where it
// uses atomics.
#pragma once

#include "../common.h"

#include <ATen/Context.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cuda_runtime.h>

#include <algorithm>

namespace semnorm {
namespace cuda {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over n items: enough to fill the device, never more than needed.
inline unsigned int grid_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = ceil_div(n, threads);
  return static_cast<unsigned int>(blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks));
}

inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// True under torch.use_deterministic_algorithms(True): kernels then avoid floating-point atomics.
inline bool deterministic() { return at::globalContext().deterministicAlgorithms(); }

// Checks the last launch (the error names the op).
#define SEMNORM_CUDA_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()

#define SEMNORM_GRID_STRIDE(i, n)                                                                     \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);              \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block; the result is valid in thread 0. `scratch` holds blockDim.x / 32 values.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  v = threadIdx.x < warps ? scratch[threadIdx.x] : T(0);
  if (warp == 0) v = warp_sum(v);
  return v;
}

// Chan's parallel combination of two (count, mean, M2) Welford states.
template <typename T>
struct Welford {
  T mean = 0, m2 = 0, count = 0;
  __device__ __forceinline__ void add(T v) {
    count += T(1);
    const T d = v - mean;
    mean += d / count;
    m2 += d * (v - mean);
  }
  __device__ __forceinline__ void merge(const Welford& o) {
    if (o.count == T(0)) return;
    if (count == T(0)) { *this = o; return; }
    const T n = count + o.count, d = o.mean - mean;
    mean += d * (o.count / n);
    m2 += o.m2 + d * d * (count * o.count / n);
    count = n;
  }
};

template <typename T>
__device__ __forceinline__ Welford<T> warp_welford(Welford<T> w) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    Welford<T> o;
    o.mean = __shfl_down_sync(0xffffffffu, w.mean, offset);
    o.m2 = __shfl_down_sync(0xffffffffu, w.m2, offset);
    o.count = __shfl_down_sync(0xffffffffu, w.count, offset);
    w.merge(o);
  }
  return w;
}

// Welford state over the block; valid in thread 0. `scratch` holds blockDim.x / 32 states.
template <typename T>
__device__ __forceinline__ Welford<T> block_welford(Welford<T> w, Welford<T>* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  w = warp_welford(w);
  __syncthreads();
  if (lane == 0) scratch[warp] = w;
  __syncthreads();
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  w = threadIdx.x < warps ? scratch[threadIdx.x] : Welford<T>();
  if (warp == 0) w = warp_welford(w);
  return w;
}

// ---- Vectorized access and device size (appended by the stats/semantic/positional kernels).

// V consecutive elements loaded or stored with one aligned access (PyTorch's aligned_vector idea):
// 4 floats -> one 16-byte load; 4 halves -> one 8-byte load.
template <typename T, int V>
struct alignas(sizeof(T) * V) AlignedVec {
  T val[V];
};

template <int V, typename T>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, T (&out)[V]) {
  if constexpr (V == 1) {
    out[0] = p[0];
  } else {
    const AlignedVec<T, V> v = *reinterpret_cast<const AlignedVec<T, V>*>(p);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = v.val[i];
  }
}

template <int V, typename T>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const T (&in)[V]) {
  if constexpr (V == 1) {
    p[0] = in[0];
  } else {
    AlignedVec<T, V> v;
#pragma unroll
    for (int i = 0; i < V; ++i) v.val[i] = in[i];
    *reinterpret_cast<AlignedVec<T, V>*>(p) = v;
  }
}

// True when p may be accessed as AlignedVec<T, V> (null pointers count as aligned: absent inputs).
template <typename T>
inline bool vec_aligned(const T* p, int vec) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * static_cast<size_t>(vec)) == 0;
}

// Streaming multiprocessors of the current device (sizes grids: a few blocks per SM).
inline int multiprocessor_count() {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms > 0 ? sms : 1;
}

// Threads for a block that strides over `items` (a multiple of 32 in [32, kThreads]).
inline int threads_for(int64_t items) {
  return static_cast<int>(std::min<int64_t>(kThreads, std::max<int64_t>(kWarp, ceil_div(items, kWarp) * kWarp)));
}

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Blocks over (plane, chunk) for kernels that walk planes of `hw` contiguous elements (one (n, c)
// slice each): block b handles chunk b % splits of plane b / splits, `threads` threads of `vec`
// elements each. Planes are split only when there are too few of them to fill the device (about
// 4 blocks per SM), keeping >= 4 vectors per thread, and never into chunks over 2^22 elements (so
// float counts of a chunk stay exact). chunk is a multiple of vec; no chunk is empty.
struct PlaneGrid {
  int64_t splits = 1, chunk = 1, blocks = 1;
  int threads = kThreads;
};

inline PlaneGrid plane_grid(int64_t planes, int64_t hw, int vec) {
  constexpr int64_t kMaxChunk = int64_t(1) << 22;
  PlaneGrid g;
  const int64_t vecs = ceil_div(hw, vec);
  g.threads = threads_for(vecs);
  const int64_t target = 4 * static_cast<int64_t>(multiprocessor_count());
  int64_t splits = 1;
  if (planes < target) {
    const int64_t most = std::max<int64_t>(1, vecs / (4 * static_cast<int64_t>(g.threads)));
    splits = std::min(ceil_div(target, planes), most);
  }
  splits = std::max(splits, ceil_div(hw, kMaxChunk));
  g.chunk = ceil_div(ceil_div(hw, splits), vec) * vec;
  g.splits = ceil_div(hw, g.chunk);
  g.blocks = planes * g.splits;
  TORCH_CHECK(g.blocks < (int64_t(1) << 31), "semnorm: tensor too large for the CUDA grid (", planes, " planes of ",
              hw, ")");
  return g;
}

}  // namespace cuda
}  // namespace semnorm
