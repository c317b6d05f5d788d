// The label-indexed machinery shared by the CUDA kernels of region_pool / region_broadcast,
// class_modulate and label_tap_gather (csrc/cuda/{region,class_modulate,label_conv}_kernel.cu):
//
//  * geometry: every kernel walks (plane, chunk) blocks, a plane being the pixels of one (n, c)
//    (or (n, o)) slice and a chunk a contiguous pixel range of it; each thread handles kVec = 4
//    consecutive pixels, loaded as one vector where the plane and the pointer allow it;
//  * gathers: a table column (one value per label) is staged in shared memory when it fits, else
//    read from global memory (the `Column` view), and indexed by labels from sample_labels(), which
//    range-checked them: no kernel ever indexes a table with a value that was not checked;
//  * segmented sums into (.., L) tables: `SegmentedRun` accumulates values of consecutive pixels
//    with one label in registers (natural label maps come in long runs) and adds a run to the table
//    when the label changes; steps that mix labels go to the table per label. Where a block's table
//    lives and how it reaches the result is the `TableLayout`:
//      fast path (atomics): one table per block in shared memory, filled with shared-memory
//        atomicAdd, then added to a zeroed global accumulator with one global atomicAdd per nonzero
//        entry; a table too large for shared memory takes the global atomics directly;
//      deterministic path (torch.use_deterministic_algorithms(True), no float atomics): one table
//        per warp, written by lane 0 of that warp only, in a fixed order (mixed steps: one warp sum
//        per distinct label, in order of the first lane holding it); the block adds its warps'
//        tables in warp order and stores the sum to a workspace row per (plane, chunk) (tables too
//        large for shared memory live in a zeroed workspace row per (plane, chunk, warp)); a second
//        pass (`table_entry`) adds the rows of each result entry in a fixed order.
//    Integer tables (pixel counts) always use atomics: integer addition is exact in any order.
// The launch geometry depends on the shapes only, never on the device, so the deterministic path
// gives bitwise identical results on every run.
#pragma once

#include "common.cuh"

#include <cstdint>

namespace semnorm {
namespace cuda {
namespace label_index {

constexpr int kVec = 4;                          // consecutive pixels per thread
constexpr int kWarps = kThreads / kWarp;         // warps per block (blocks are always kThreads wide)
// Dynamic shared memory per block: below the 48 KiB available without an opt-in, leaving room for
// the kernels' small static arrays (block_sum scratch).
constexpr int64_t kSharedBudget = 47 * 1024;
constexpr int64_t kTargetBlocks = 2048;          // about 15 blocks per SM on an H100
constexpr unsigned kFullMask = 0xffffffffu;

// ---------------------------------------------------------------------------------------------
// Host side: geometry and layouts.

// Splits `planes` planes of `pixels` pixels into chunks so that there are about kTargetBlocks
// blocks, each chunk at least `min_chunk` pixels (a multiple of 128, so vector loads stay aligned).
struct Chunking {
  int64_t chunk, chunks;
};

inline Chunking chunk_planes(int64_t planes, int64_t pixels, int64_t min_chunk = kThreads * kVec) {
  const int64_t step = kWarp * kVec;
  const int64_t want = ceil_div(kTargetBlocks, planes);
  const int64_t most = ceil_div(pixels, min_chunk);
  const int64_t chunks = want < 1 ? 1 : (want > most ? most : want);
  const int64_t chunk = ceil_div(ceil_div(pixels, chunks), step) * step;
  return {chunk, ceil_div(pixels, chunk)};
}

// Grid size for blocks = planes * chunks (1-D grids take up to 2^31 - 1 blocks).
inline unsigned int block_count(int64_t blocks, const char* op) {
  TORCH_CHECK(blocks > 0 && blocks <= INT32_MAX, "semnorm.", op, ": too many CUDA blocks (", blocks, ")");
  return static_cast<unsigned int>(blocks);
}

// True when kVec consecutive elements of type T can be loaded as one vector at every plane start:
// the plane length is a multiple of kVec and the pointer is aligned to the vector.
template <typename T>
inline bool vec_ok(const T* p, int64_t plane_len) {
  return plane_len % kVec == 0 && reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kVec) == 0;
}

// Where the segmented sums of a kernel go (see the top of this file). A plane p adds into result
// row p % rows; rows * groups = planes (groups > 1 when several planes share a row, e.g. the
// samples n of a per-channel bank gradient).
struct TableLayout {
  int64_t entries;  // E: entries of one row (values per pixel x L)
  int64_t rows;     // R: result rows
  int64_t groups;   // planes / R
  int64_t chunks;   // chunks per plane
  bool deterministic;
  bool shared;      // block tables in dynamic shared memory
  C10_HOST_DEVICE int64_t parts() const { return deterministic ? (shared ? chunks : chunks * kWarps) : 1; }
};

// The chunking and table layout of a segmented sum over `planes` planes of `pixels` pixels into
// `rows` result rows of `entries` entries. `extra_bytes` of dynamic shared memory are taken by the
// caller (staged columns) before the tables. Deterministic tables too large for shared memory live
// in a workspace row per (plane, chunk, warp); fewer, longer chunks then keep that workspace no
// larger than the input.
struct TablePlan {
  Chunking ch;
  TableLayout tl;
};

template <typename acc>
inline TablePlan plan_tables(int64_t planes, int64_t pixels, int64_t entries, int64_t rows, bool det,
                             int64_t extra_bytes = 0, int64_t min_chunk = kThreads * kVec) {
  TablePlan p{chunk_planes(planes, pixels, min_chunk), TableLayout{}};
  TableLayout& t = p.tl;
  t.entries = entries;
  t.rows = rows;
  t.groups = planes / rows;
  t.deterministic = det;
  const int64_t bytes = (det ? kWarps : 1) * entries * static_cast<int64_t>(sizeof(acc));
  t.shared = bytes + extra_bytes <= kSharedBudget;
  if (det && !t.shared) {
    const int64_t most = pixels / (kWarps * entries);
    if (most < p.ch.chunks) {
      const int64_t step = kWarp * kVec, chunks = most < 1 ? 1 : most;
      p.ch.chunk = ceil_div(ceil_div(pixels, chunks), step) * step;
      p.ch.chunks = ceil_div(pixels, p.ch.chunk);
    }
  }
  t.chunks = p.ch.chunks;
  return p;
}

template <typename acc>
inline int64_t table_smem_bytes(const TableLayout& t) {
  return t.shared ? (t.deterministic ? kWarps : 1) * t.entries * static_cast<int64_t>(sizeof(acc)) : 0;
}

// Elements of the workspace: the zeroed accumulator (fast path) or the per-part rows (deterministic).
// The deterministic rows in shared memory are written whole by close_table; the global per-warp
// rows are accumulated into and must start at zero: allocate them with at::zeros in both cases.
inline int64_t workspace_numel(const TableLayout& t) {
  return t.deterministic ? t.rows * t.groups * t.parts() * t.entries : t.rows * t.entries;
}

// ---------------------------------------------------------------------------------------------
// Device side: loads and stores of kVec consecutive elements.

template <typename T>
struct alignas(sizeof(T) * kVec) VecT {
  T v[kVec];
};

// out[j] = p[i + j] for i + j < end (else T(0)); one vector load when `vec` and the vector is whole.
template <typename T>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, int64_t i, int64_t end, bool vec, T (&out)[kVec]) {
  if (vec && i + kVec <= end) {
    const VecT<T> t = *reinterpret_cast<const VecT<T>*>(p + i);
#pragma unroll
    for (int j = 0; j < kVec; ++j) out[j] = t.v[j];
  } else {
#pragma unroll
    for (int j = 0; j < kVec; ++j) out[j] = i + j < end ? p[i + j] : T(0);
  }
}

// Same, converted to the accumulation type.
template <typename acc, typename T>
__device__ __forceinline__ void load_vec_as(const T* __restrict__ p, int64_t i, int64_t end, bool vec,
                                            acc (&out)[kVec]) {
  T raw[kVec];
  load_vec(p, i, end, vec, raw);
#pragma unroll
  for (int j = 0; j < kVec; ++j) out[j] = static_cast<acc>(raw[j]);
}

// Labels of pixels i .. i + kVec - 1; -1 past `end` (such pixels contribute nothing anywhere).
__device__ __forceinline__ void load_labels(const int32_t* __restrict__ lab, int64_t i, int64_t end, bool vec,
                                            int (&out)[kVec]) {
  if (vec && i + kVec <= end) {
    const VecT<int32_t> t = *reinterpret_cast<const VecT<int32_t>*>(lab + i);
#pragma unroll
    for (int j = 0; j < kVec; ++j) out[j] = t.v[j];
  } else {
#pragma unroll
    for (int j = 0; j < kVec; ++j) out[j] = i + j < end ? lab[i + j] : -1;
  }
}

template <typename T>
__device__ __forceinline__ void store_vec(T* __restrict__ p, int64_t i, int64_t end, bool vec, const T (&v)[kVec]) {
  if (vec && i + kVec <= end) {
    VecT<T> t;
#pragma unroll
    for (int j = 0; j < kVec; ++j) t.v[j] = v[j];
    *reinterpret_cast<VecT<T>*>(p + i) = t;
  } else {
#pragma unroll
    for (int j = 0; j < kVec; ++j)
      if (i + j < end) p[i + j] = v[j];
  }
}

// Dynamic shared memory as an array of T (one untyped declaration for every kernel).
template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char semnorm_label_index_smem[];
  return reinterpret_cast<T*>(semnorm_label_index_smem);
}

// ---------------------------------------------------------------------------------------------
// Gathers: a per-label column of a table, staged in shared memory or read in place.

// col[l] = static_cast<D>(src[l * stride]) for l < n, by the whole block. The caller synchronises
// (__syncthreads) before reading it.
template <typename D, typename S>
__device__ __forceinline__ void stage_column(D* __restrict__ col, const S* __restrict__ src, int64_t n, int64_t stride) {
  for (int64_t l = threadIdx.x; l < n; l += blockDim.x) col[l] = static_cast<D>(src[l * stride]);
}

// A column indexed by (checked) label: `data[l * stride]` converted to acc. Staged columns have
// stride 1 and T = acc; unstaged ones point into the global table.
template <typename acc, typename T>
struct Column {
  const T* data;
  int64_t stride;
  __device__ __forceinline__ acc operator[](int l) const { return static_cast<acc>(data[l * stride]); }
};

// ---------------------------------------------------------------------------------------------
// Segmented sums.

// A (.., L) table: entry (label l, value j) at data[j * stride + l]. Lane 0 of a warp or (atomic
// tables) any lane adds to it.
template <typename T>
struct LabelTable {
  T* data;
  int64_t stride;
  bool atomic;
  template <typename V>
  __device__ __forceinline__ void add(int l, int j, V v) const {
    T* p = data + j * stride + l;
    if (atomic) {
      atomicAdd(p, static_cast<T>(v));
    } else {
      *p += static_cast<T>(v);
    }
  }
};

// Per-warp run of one label: every lane keeps its share of NV sums for the warp-uniform `label`.
// All 32 lanes of the warp must call push/flush together (warp-uniform control flow).
template <typename V, int NV>
struct SegmentedRun {
  V run[NV];
  int label;

  __device__ __forceinline__ SegmentedRun() : label(-1) {
#pragma unroll
    for (int j = 0; j < NV; ++j) run[j] = V(0);
  }

  // Adds the run to the table (lane 0 holds the warp sums) and empties it.
  template <typename T>
  __device__ __forceinline__ void flush(const LabelTable<T>& t) {
    if (label < 0) return;  // warp-uniform
    const bool lane0 = threadIdx.x % kWarp == 0;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const V s = warp_sum(run[j]);
      if (lane0) t.add(label, j, s);
      run[j] = V(0);
    }
    label = -1;
  }

  // One pixel per lane: label l (< 0: nothing) with values v.
  template <typename T>
  __device__ __forceinline__ void push(int l, const V (&v)[NV], const LabelTable<T>& t) {
    const unsigned valid = __ballot_sync(kFullMask, l >= 0);
    if (valid == 0u) return;
    const int first = __shfl_sync(kFullMask, l, __ffs(valid) - 1);
    if (__all_sync(kFullMask, l < 0 || l == first)) {  // one label in the whole step: extend / start a run
      if (first != label) {
        flush(t);
        label = first;
      }
      if (l >= 0) {
#pragma unroll
        for (int j = 0; j < NV; ++j) run[j] += v[j];
      }
      return;
    }
    // Mixed step: the run's label stays in registers, the others go to the table.
    const bool in_run = l >= 0 && l == label;
    if (in_run) {
#pragma unroll
      for (int j = 0; j < NV; ++j) run[j] += v[j];
    }
    if (t.atomic) {  // warp-uniform
      if (l >= 0 && !in_run) {
#pragma unroll
        for (int j = 0; j < NV; ++j) t.add(l, j, v[j]);
      }
      return;
    }
    // Deterministic: one warp sum per distinct label, in the order of the first lane holding it.
    unsigned pending = valid & ~__ballot_sync(kFullMask, in_run);
    const bool lane0 = threadIdx.x % kWarp == 0;
    while (pending != 0u) {
      const int cur = __shfl_sync(kFullMask, l, __ffs(pending) - 1);
      const bool mine = l == cur;
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const V s = warp_sum(mine ? v[j] : V(0));
        if (lane0) t.add(cur, j, s);
      }
      pending &= ~__ballot_sync(kFullMask, mine);
    }
  }

  // kVec consecutive pixels per lane, labels l[e] and values value(e, j) (called only for the
  // values needed; it must return 0 for l[e] < 0 without reading anything). When every lane's
  // pixels share one label (the common case inside regions) they are summed in the lane first and
  // pushed once.
  template <typename T, typename F>
  __device__ __forceinline__ void push_vec(const int (&l)[kVec], F&& value, const LabelTable<T>& t) {
    bool same = true;
#pragma unroll
    for (int e = 1; e < kVec; ++e) same = same && l[e] == l[0];
    if (__all_sync(kFullMask, same)) {
      V s[NV];
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        s[j] = value(0, j);
#pragma unroll
        for (int e = 1; e < kVec; ++e) s[j] += value(e, j);
      }
      push(l[0], s, t);
    } else {
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        V v[NV];
#pragma unroll
        for (int j = 0; j < NV; ++j) v[j] = value(e, j);
        push(l[e], v, t);
      }
    }
  }
};

// Opens the block's table for (plane, chunk) and returns the calling warp's row base (entries
// j * L + l relative to it) with whether adds must be atomic. Contains __syncthreads(): call it
// from every thread of the block, outside divergent code.
template <typename acc>
struct WarpTable {
  acc* row;
  bool atomic;
};

template <typename acc>
__device__ __forceinline__ WarpTable<acc> open_table(const TableLayout& tl, acc* __restrict__ ws, acc* smem,
                                                     int64_t plane, int64_t chunk) {
  const int warp = threadIdx.x / kWarp;
  if (tl.shared) {
    const int64_t n = (tl.deterministic ? kWarps : 1) * tl.entries;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) smem[i] = acc(0);
    __syncthreads();
    if (tl.deterministic) return {smem + warp * tl.entries, false};
    return {smem, true};
  }
  if (tl.deterministic) return {ws + ((plane * tl.chunks + chunk) * kWarps + warp) * tl.entries, false};
  return {ws + (plane % tl.rows) * tl.entries, true};
}

// Publishes the block's shared tables (see the top of the file). Contains __syncthreads(): call it
// from every thread of the block, outside divergent code, after the last push/flush.
template <typename acc>
__device__ __forceinline__ void close_table(const TableLayout& tl, acc* __restrict__ ws, const acc* smem,
                                            int64_t plane, int64_t chunk) {
  if (!tl.shared) return;
  __syncthreads();
  if (tl.deterministic) {
    acc* dst = ws + (plane * tl.chunks + chunk) * tl.entries;
    for (int64_t e = threadIdx.x; e < tl.entries; e += blockDim.x) {
      acc s = smem[e];
#pragma unroll
      for (int w = 1; w < kWarps; ++w) s += smem[w * tl.entries + e];
      dst[e] = s;
    }
  } else {
    acc* dst = ws + (plane % tl.rows) * tl.entries;
    for (int64_t e = threadIdx.x; e < tl.entries; e += blockDim.x) {
      const acc v = smem[e];
      if (v != acc(0)) atomicAdd(dst + e, v);
    }
  }
}

// Second pass: the value of result entry (row r, entry e), adding the workspace rows of every plane
// and part that map to it in a fixed order (the fast path's accumulator holds it already).
template <typename acc>
__device__ __forceinline__ acc table_entry(const TableLayout& tl, const acc* __restrict__ ws, int64_t r, int64_t e) {
  if (!tl.deterministic) return ws[r * tl.entries + e];
  const int64_t parts = tl.parts();
  acc s = acc(0);
  for (int64_t g = 0; g < tl.groups; ++g) {
    const acc* p = ws + (g * tl.rows + r) * parts * tl.entries + e;
    for (int64_t k = 0; k < parts; ++k) s += p[k * tl.entries];
  }
  return s;
}

}  // namespace label_index
}  // namespace cuda
}  // namespace semnorm
