// Label convolution on the CPU: a k x k convolution of a one-hot label map (SPADE's first conv) or of
// a region-broadcast code map (SEAN's style conv) computed exactly as a sum of k*k gathered table
// columns per pixel (SPEC section 4). No one-hot, no im2col: the forward reads one small table slice
// per (n, o) plane, the backward scatter-adds each gradient plane into a private per-(t, o) buffer.
#include "checks/label_conv_checks.h"
#include "common.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace semnorm {
namespace {

// Output columns w of a row for which tap column tx (offset dx = tx - r) lands inside the image:
// w + dx in [0, W). Taps are handled one at a time over whole row spans, so the clipped span is the
// border handling and the inner loop has no per-pixel bounds test.
struct Span {
  int64_t begin, end;
};
inline Span tap_span(int64_t dx, int64_t W) { return {std::max<int64_t>(0, -dx), std::min<int64_t>(W, W - dx)}; }

// Planes per task: tiny problems run inline on the calling thread (waking threads costs more than
// the work, and much more on a busy machine); large ones get one plane per task.
inline int64_t plane_grain(int64_t work_per_plane) {
  constexpr int64_t kMinWork = 1 << 15;
  return std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, work_per_plane));
}

// Output channels handled together by one task: each label read and each table line fetched serves
// kBlock channels (the table slice is stored label-major, kBlock lanes per (tap, label)), and the
// lanes vectorize. 4 lanes of k*k*L acc values stay in L1 for SPADE's 3x3 x 151 classes.
constexpr int64_t kBlock = 4;

// out[n, o0 : o0 + kBlock] for each (n, channel block). The table slice is converted once to acc_t
// (zero lanes past Cout). Interior pixels (all k*k taps in the image) sum their taps in registers
// with precomputed label offsets and no bounds test; the border pixels test each tap.
template <typename scalar_t>
void label_tap_gather_cpu_impl(const scalar_t* table, const int32_t* lab, scalar_t* out, int64_t N, int64_t T,
                               int64_t C, int64_t K, int64_t L, int64_t H, int64_t W) {
  using acc = acc_t<scalar_t>;
  constexpr int64_t B = kBlock;
  const int64_t KK = K * K, r = K / 2, HW = H * W, blocks = (C + B - 1) / B;
  at::parallel_for(0, N * blocks, plane_grain(B * HW * KK), [&](int64_t begin, int64_t end) {
    std::vector<acc> tab(KK * L * B), uniform(L * B);
    std::vector<int64_t> offset(KK);
    for (int64_t tap = 0; tap < KK; ++tap) offset[tap] = (tap / K - r) * W + (tap % K - r);
    int64_t cached = -1;  // (t, block) slice currently in `tab`
    // Tasks run block-major (all samples of one channel block in a row), so with a shared table
    // (T == 1) the slice is converted once per block, not once per (n, block): with a large table
    // (SPADE's fast path has thousands of 'labels') the conversion would cost as much as the gather.
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task % N, o0 = (task / N) * B, t = T == 1 ? 0 : n;
      const int64_t cb = std::min(B, C - o0);
      if (t * blocks + o0 / B != cached) {
        std::fill(tab.begin(), tab.end(), acc(0));
        for (int64_t b = 0; b < cb; ++b) {
          const scalar_t* src = table + (t * C + o0 + b) * KK * L;
          for (int64_t i = 0; i < KK * L; ++i) tab[i * B + b] = static_cast<acc>(src[i]);
        }
        // per-label sums over the taps, added in tap order as the gather adds them (bit-identical)
        std::fill(uniform.begin(), uniform.end(), acc(0));
        for (int64_t tap = 0; tap < KK; ++tap)
          for (int64_t i = 0; i < L * B; ++i) uniform[i] += tab[tap * L * B + i];
        cached = t * blocks + o0 / B;
      }
      const int32_t* ln = lab + n * HW;
      scalar_t* op = out + (n * C + o0) * HW;
      const acc* tb = tab.data();
      const int64_t* off = offset.data();
      const auto store = [&](int64_t p, const acc* sum) {
        for (int64_t b = 0; b < cb; ++b) op[b * HW + p] = static_cast<scalar_t>(sum[b]);
      };
      const auto border_pixel = [&](int64_t h, int64_t w) {
        acc sum[B] = {};
        for (int64_t ty = 0; ty < K; ++ty) {
          const int64_t y = h + ty - r;
          if (y < 0 || y >= H) continue;
          for (int64_t tx = 0; tx < K; ++tx) {
            const int64_t x = w + tx - r;
            if (x < 0 || x >= W) continue;
            const acc* c = tb + ((ty * K + tx) * L + ln[y * W + x]) * B;
            for (int64_t b = 0; b < B; ++b) sum[b] += c[b];
          }
        }
        store(h * W + w, sum);
      };
      for (int64_t h = 0; h < H; ++h) {
        if (h < r || h >= H - r) {
          for (int64_t w = 0; w < W; ++w) border_pixel(h, w);
          continue;
        }
        const int64_t w_end = std::max(r, W - r);
        for (int64_t w = 0; w < std::min(r, W); ++w) border_pixel(h, w);
        for (int64_t w = r; w < W - r; ++w) {  // interior fast path
          const int64_t p = h * W + w;
          // inside a region every tap reads the same label: one precomputed sum instead of k*k
          // table reads (the table can be far larger than L1)
          const int32_t centre = ln[p];
          bool same = true;
          for (int64_t tap = 0; tap < KK; ++tap) same &= ln[p + off[tap]] == centre;
          if (same) {
            store(p, uniform.data() + centre * B);
            continue;
          }
          acc sum[B] = {};
          for (int64_t tap = 0; tap < KK; ++tap) {
            const acc* c = tb + (tap * L + ln[p + off[tap]]) * B;
            for (int64_t b = 0; b < B; ++b) sum[b] += c[b];
          }
          store(p, sum);
        }
        for (int64_t w = w_end; w < W; ++w) border_pixel(h, w);
      }
    }
  });
}

// grad_table[t, o0 : o0 + kBlock] for each (t, channel block): the task owns those outputs and a
// private acc_t buffer (label-major, kBlock lanes), and loops over the samples n that use table t,
// their rows and in-image taps. Each row's gradients are first gathered lane-interleaved; along a tap
// row span, runs of equal labels (long on natural masks) are summed in registers before one add.
template <typename scalar_t>
void label_tap_gather_backward_cpu_impl(const scalar_t* grad, const int32_t* lab, scalar_t* grad_table, int64_t N,
                                        int64_t T, int64_t C, int64_t K, int64_t L, int64_t H, int64_t W) {
  using acc = acc_t<scalar_t>;
  constexpr int64_t B = kBlock;
  const int64_t KK = K * K, r = K / 2, HW = H * W, blocks = (C + B - 1) / B;
  at::parallel_for(0, T * blocks, plane_grain(B * (N / T) * HW * KK), [&](int64_t begin, int64_t end) {
    std::vector<acc> buf(KK * L * B);
    std::vector<acc> grow(W * B);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / blocks, o0 = (task % blocks) * B;
      const int64_t cb = std::min(B, C - o0);
      std::fill(buf.begin(), buf.end(), acc(0));
      std::fill(grow.begin(), grow.end(), acc(0));
      const int64_t n0 = T == 1 ? 0 : t, n1 = T == 1 ? N : t + 1;
      for (int64_t n = n0; n < n1; ++n) {
        const int32_t* ln = lab + n * HW;
        const scalar_t* gp = grad + (n * C + o0) * HW;
        for (int64_t h = 0; h < H; ++h) {
          for (int64_t b = 0; b < cb; ++b)
            for (int64_t w = 0; w < W; ++w) grow[w * B + b] = static_cast<acc>(gp[b * HW + h * W + w]);
          const int64_t ty0 = std::max<int64_t>(0, r - h), ty1 = std::min<int64_t>(K, H + r - h);
          for (int64_t ty = ty0; ty < ty1; ++ty) {
            const int32_t* lr = ln + (h + ty - r) * W;
            for (int64_t tx = 0; tx < K; ++tx) {
              const int64_t dx = tx - r;
              acc* col = buf.data() + (ty * K + tx) * L * B;
              const Span s = tap_span(dx, W);
              if (s.begin >= s.end) continue;
              const int32_t* lw = lr + dx;
              const acc* g = grow.data();
              int32_t cur = lw[s.begin];
              acc run[B] = {};
              for (int64_t w = s.begin; w < s.end; ++w) {
                const int32_t l = lw[w];
                if (l != cur) {
                  for (int64_t b = 0; b < B; ++b) {
                    col[cur * B + b] += run[b];
                    run[b] = acc(0);
                  }
                  cur = l;
                }
                for (int64_t b = 0; b < B; ++b) run[b] += g[w * B + b];
              }
              for (int64_t b = 0; b < B; ++b) col[cur * B + b] += run[b];
            }
          }
        }
      }
      for (int64_t b = 0; b < cb; ++b) {
        scalar_t* dst = grad_table + (t * C + o0 + b) * KK * L;
        for (int64_t i = 0; i < KK * L; ++i) dst[i] = static_cast<scalar_t>(buf[i * B + b]);
      }
    }
  });
}

Tensor label_tap_gather_cpu(const Tensor& table, const Tensor& labels, int64_t kernel_size, c10::SymInt height,
                            c10::SymInt width) {
  constexpr const char* op = "label_tap_gather";
  const LabelConvSizes sz = check_label_tap_gather(table, labels, kernel_size, height, width, op);
  const int64_t N = sz.N, T = sz.T, C = sz.C, K = sz.K, L = sz.L, H = sz.H, W = sz.W;
  const Tensor lab = sample_labels(labels, N, H, W, L, op);
  const Tensor tc = table.contiguous();
  Tensor out = at::empty({N, C, H, W}, table.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, table.scalar_type(), "semnorm_label_tap_gather", [&] {
    label_tap_gather_cpu_impl<scalar_t>(tc.data_ptr<scalar_t>(), lab.data_ptr<int32_t>(), out.data_ptr<scalar_t>(), N,
                                        T, C, K, L, H, W);
  });
  return out;
}

Tensor label_tap_gather_backward_cpu(const Tensor& grad_out, const Tensor& labels, int64_t num_tables,
                                     int64_t num_classes, int64_t kernel_size) {
  constexpr const char* op = "label_tap_gather_backward";
  const LabelConvSizes sz =
      check_label_tap_gather_backward(grad_out, labels, num_tables, num_classes, kernel_size, op);
  const int64_t N = sz.N, T = sz.T, C = sz.C, K = sz.K, L = sz.L, H = sz.H, W = sz.W;
  const Tensor lab = sample_labels(labels, N, H, W, L, op);
  const Tensor gc = grad_out.contiguous();
  Tensor grad_table = at::empty({T, C, K * K, L}, grad_out.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(),
                                  "semnorm_label_tap_gather_backward", [&] {
                                    label_tap_gather_backward_cpu_impl<scalar_t>(
                                        gc.data_ptr<scalar_t>(), lab.data_ptr<int32_t>(),
                                        grad_table.data_ptr<scalar_t>(), N, T, C, K, L, H, W);
                                  });
  return grad_table;
}

}  // namespace

TORCH_LIBRARY_IMPL(semnorm, CPU, m) {
  m.impl("label_tap_gather", &label_tap_gather_cpu);
  m.impl("label_tap_gather_backward", &label_tap_gather_backward_cpu);
}

}  // namespace semnorm
