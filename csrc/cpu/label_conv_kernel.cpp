// Label convolution on the CPU: a k x k convolution of a one-hot label map (SPADE's first conv) or of
// a region-broadcast code map (SEAN's style conv) computed exactly as a sum of k*k gathered table
// columns per pixel (SPEC section 4). No one-hot, no im2col: the forward reads one small table slice
// per (n, o) plane, the backward scatter-adds each gradient plane into a private per-(t, o) buffer.
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

// out[n, o] for each (n, o) plane. The slice table[t, o] (k*k*L values) is converted once to acc_t
// and stays in L1; each output row accumulates its in-image taps into an acc_t row buffer (interior
// rows take all k*k taps over their clipped spans, border rows skip the out-of-image tap rows).
template <typename scalar_t>
void label_tap_gather_cpu_impl(const scalar_t* table, const int32_t* lab, scalar_t* out, int64_t N, int64_t T,
                               int64_t C, int64_t K, int64_t L, int64_t H, int64_t W) {
  using acc = acc_t<scalar_t>;
  const int64_t KK = K * K, r = K / 2, HW = H * W;
  at::parallel_for(0, N * C, plane_grain(HW * KK), [&](int64_t begin, int64_t end) {
    std::vector<acc> tab(KK * L);
    std::vector<acc> row(W);
    int64_t cached = -1;  // (t, o) slice currently in `tab`
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, o = nc % C, t = T == 1 ? 0 : n;
      const int64_t slice = t * C + o;
      if (slice != cached) {
        const scalar_t* src = table + slice * KK * L;
        for (int64_t i = 0; i < KK * L; ++i) tab[i] = static_cast<acc>(src[i]);
        cached = slice;
      }
      const int32_t* ln = lab + n * HW;
      scalar_t* op = out + nc * HW;
      for (int64_t h = 0; h < H; ++h) {
        std::fill(row.begin(), row.end(), acc(0));
        const int64_t ty0 = std::max<int64_t>(0, r - h), ty1 = std::min<int64_t>(K, H + r - h);
        for (int64_t ty = ty0; ty < ty1; ++ty) {
          const int32_t* lr = ln + (h + ty - r) * W;
          for (int64_t tx = 0; tx < K; ++tx) {
            const int64_t dx = tx - r;
            const acc* col = tab.data() + (ty * K + tx) * L;
            const Span s = tap_span(dx, W);
            const int32_t* lw = lr + dx;
            acc* rw = row.data();
            for (int64_t w = s.begin; w < s.end; ++w) rw[w] += col[lw[w]];
          }
        }
        scalar_t* orow = op + h * W;
        for (int64_t w = 0; w < W; ++w) orow[w] = static_cast<scalar_t>(row[w]);
      }
    }
  });
}

// grad_table[t, o] for each (t, o): the task owns the k*k*L outputs and a private acc_t buffer, and
// loops over the samples n that use table t, their rows and in-image taps. Runs of equal labels
// (long on natural masks) are summed in a register before one add into the buffer.
template <typename scalar_t>
void label_tap_gather_backward_cpu_impl(const scalar_t* grad, const int32_t* lab, scalar_t* grad_table, int64_t N,
                                        int64_t T, int64_t C, int64_t K, int64_t L, int64_t H, int64_t W) {
  using acc = acc_t<scalar_t>;
  const int64_t KK = K * K, r = K / 2, HW = H * W;
  at::parallel_for(0, T * C, plane_grain((N / T) * HW * KK), [&](int64_t begin, int64_t end) {
    std::vector<acc> buf(KK * L);
    std::vector<acc> grow(W);
    for (int64_t tc = begin; tc < end; ++tc) {
      const int64_t t = tc / C, o = tc % C;
      std::fill(buf.begin(), buf.end(), acc(0));
      const int64_t n0 = T == 1 ? 0 : t, n1 = T == 1 ? N : t + 1;
      for (int64_t n = n0; n < n1; ++n) {
        const int32_t* ln = lab + n * HW;
        const scalar_t* gp = grad + (n * C + o) * HW;
        for (int64_t h = 0; h < H; ++h) {
          for (int64_t w = 0; w < W; ++w) grow[w] = static_cast<acc>(gp[h * W + w]);
          const int64_t ty0 = std::max<int64_t>(0, r - h), ty1 = std::min<int64_t>(K, H + r - h);
          for (int64_t ty = ty0; ty < ty1; ++ty) {
            const int32_t* lr = ln + (h + ty - r) * W;
            for (int64_t tx = 0; tx < K; ++tx) {
              const int64_t dx = tx - r;
              acc* col = buf.data() + (ty * K + tx) * L;
              const Span s = tap_span(dx, W);
              if (s.begin >= s.end) continue;
              const int32_t* lw = lr + dx;
              int32_t cur = lw[s.begin];
              acc run = acc(0);
              for (int64_t w = s.begin; w < s.end; ++w) {
                const int32_t l = lw[w];
                if (l != cur) {
                  col[cur] += run;
                  run = acc(0);
                  cur = l;
                }
                run += grow[w];
              }
              col[cur] += run;
            }
          }
        }
      }
      scalar_t* dst = grad_table + tc * KK * L;
      for (int64_t i = 0; i < KK * L; ++i) dst[i] = static_cast<scalar_t>(buf[i]);
    }
  });
}

void check_kernel_size(int64_t kernel_size, const char* op) {
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, "semnorm.", op,
              ": kernel_size must be a positive odd integer, got ", kernel_size);
}

Tensor label_tap_gather_cpu(const Tensor& table, const Tensor& labels, int64_t kernel_size, c10::SymInt height,
                            c10::SymInt width) {
  constexpr const char* op = "label_tap_gather";
  check_float(table, op, "table");
  check_dim(table, 4, op, "table");
  check_nonempty(table, op, "table");
  check_kernel_size(kernel_size, op);
  check_same_device(table, labels, op, "table", "labels");
  const int64_t H = height.expect_int(), W = width.expect_int();
  TORCH_CHECK(H > 0 && W > 0, "semnorm.", op, ": height and width must be positive, got ", H, " x ", W);
  check_defined(labels, op, "labels");
  check_dim(labels, 3, op, "labels");
  const int64_t N = labels.size(0), T = table.size(0), C = table.size(1), K = kernel_size, L = table.size(3);
  TORCH_CHECK(table.size(2) == K * K, "semnorm.", op, ": table must have shape (T, Cout, kernel_size^2 = ", K * K,
              ", L), got ", table.sizes());
  TORCH_CHECK(T == 1 || T == N, "semnorm.", op, ": table must have 1 or N = ", N,
              " entries in dimension 0 (one per sample), got ", T);
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
  check_activation(grad_out, op, "grad_out");
  check_kernel_size(kernel_size, op);
  check_same_device(grad_out, labels, op, "grad_out", "labels");
  const int64_t N = grad_out.size(0), C = grad_out.size(1), H = grad_out.size(2), W = grad_out.size(3);
  const int64_t T = num_tables, K = kernel_size, L = num_classes;
  TORCH_CHECK(T == 1 || T == N, "semnorm.", op, ": num_tables must be 1 or N = ", N, ", got ", T);
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
