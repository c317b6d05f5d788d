// CLADE-ICPE's intra-class positional map on the CPU: 8-connected components of every class by
// union-find, then per-component centroids and largest absolute offsets, all in O(H*W) per image.
// Replaces the published offline preprocessing (a per-class OpenCV connected-components loop).
#include "common.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace semnorm {
namespace {

constexpr const char* kOp = "intra_class_positional";

// Index of the first negative label of one image, or -1 (labels have no upper bound here).
template <typename label_t>
int64_t first_negative_label(const label_t* data, int64_t numel) {
  if constexpr (std::is_unsigned_v<label_t>) {
    return -1;
  } else {
    for (int64_t i = 0; i < numel; ++i)
      if (data[i] < 0) return i;
    return -1;
  }
}

// Root of p with path halving. Union by index keeps parent[q] <= q for every q, so roots are the
// smallest index of their tree and the later one-pass relabelling is exact.
inline int32_t find_root(int32_t* parent, int32_t p) {
  while (parent[p] != p) {
    parent[p] = parent[parent[p]];
    p = parent[p];
  }
  return p;
}

inline void unite(int32_t* parent, int32_t a, int32_t b) {
  a = find_root(parent, a);
  b = find_root(parent, b);
  if (a < b) {
    parent[b] = a;
  } else if (b < a) {
    parent[a] = b;
  }
}

// Per-thread scratch, reused across the images a thread handles.
struct Scratch {
  std::vector<int32_t> comp;  // union-find parents, then compact component ids (-1: ignored)
  std::vector<int64_t> count, sum_row, sum_col;
  std::vector<double> cen_row, cen_col, max_row, max_col;
};

// One image: labels (H, W) -> D (2, H, W).
template <typename label_t>
void positional_one_image(const label_t* lab, float* out, int64_t H, int64_t W, int64_t ignore, double eps,
                          Scratch& s) {
  const int64_t HW = H * W;
  s.comp.resize(HW);
  int32_t* comp = s.comp.data();
  const auto ignored = [&](label_t v) { return static_cast<int64_t>(v) == ignore; };

  // 1. Raster scan: join each pixel with its already-visited same-label 8-neighbours (W, NW, N, NE).
  //    If N matches, W / NW / NE are already in N's tree when they match (each is 8-adjacent to N and
  //    was scanned after joining it), so one union suffices; otherwise W covers NW, and NE is separate.
  for (int64_t h = 0; h < H; ++h) {
    const label_t* row = lab + h * W;
    const label_t* up = h > 0 ? row - W : row;  // only read when h > 0
    int32_t* crow = comp + h * W;
    for (int64_t w = 0; w < W; ++w) {
      const int32_t p = static_cast<int32_t>(h * W + w);
      const label_t v = row[w];
      if (ignored(v)) {
        crow[w] = -1;
        continue;
      }
      crow[w] = p;
      const bool has_w = w > 0 && row[w - 1] == v;
      if (h > 0) {
        if (up[w] == v) {
          unite(comp, p, p - static_cast<int32_t>(W));
          continue;
        }
        const bool has_nw = w > 0 && up[w - 1] == v;
        const bool has_ne = w + 1 < W && up[w + 1] == v;
        if (has_w) {
          unite(comp, p, p - 1);
        } else if (has_nw) {
          unite(comp, p, p - static_cast<int32_t>(W) - 1);
        }
        if (has_ne) unite(comp, p, p - static_cast<int32_t>(W) + 1);
      } else if (has_w) {
        unite(comp, p, p - 1);
      }
    }
  }

  // 2. Flatten into compact ids 0..K-1 in one forward pass: parent[p] < p was already relabelled.
  int32_t K = 0;
  for (int64_t p = 0; p < HW; ++p) {
    const int32_t q = comp[p];
    if (q < 0) continue;
    comp[p] = q == p ? K++ : comp[q];
  }

  // 3. Per-component pixel count and coordinate sums (exact integers), then centroids in float64.
  s.count.assign(K, 0);
  s.sum_row.assign(K, 0);
  s.sum_col.assign(K, 0);
  for (int64_t h = 0; h < H; ++h) {
    const int32_t* crow = comp + h * W;
    for (int64_t w = 0; w < W; ++w) {
      const int32_t k = crow[w];
      if (k < 0) continue;
      ++s.count[k];
      s.sum_row[k] += h;
      s.sum_col[k] += w;
    }
  }
  s.cen_row.resize(K);
  s.cen_col.resize(K);
  for (int32_t k = 0; k < K; ++k) {
    s.cen_row[k] = static_cast<double>(s.sum_row[k]) / static_cast<double>(s.count[k]);
    s.cen_col[k] = static_cast<double>(s.sum_col[k]) / static_cast<double>(s.count[k]);
  }

  // 4. Largest absolute offset per component and axis.
  s.max_row.assign(K, 0.0);
  s.max_col.assign(K, 0.0);
  for (int64_t h = 0; h < H; ++h) {
    const int32_t* crow = comp + h * W;
    for (int64_t w = 0; w < W; ++w) {
      const int32_t k = crow[w];
      if (k < 0) continue;
      s.max_row[k] = std::max(s.max_row[k], std::abs(static_cast<double>(h) - s.cen_row[k]));
      s.max_col[k] = std::max(s.max_col[k], std::abs(static_cast<double>(w) - s.cen_col[k]));
    }
  }
  // Reciprocal denominators; a zero denominator (eps == 0 and a one-pixel-thick axis) means every
  // offset along that axis is zero, so D is 0 there.
  for (int32_t k = 0; k < K; ++k) {
    const double dr = s.max_row[k] + eps, dc = s.max_col[k] + eps;
    s.max_row[k] = dr > 0 ? 1.0 / dr : 0.0;
    s.max_col[k] = dc > 0 ? 1.0 / dc : 0.0;
  }

  // 5. D[0] = row offset / (max |row offset| + eps), D[1] likewise for columns; ignored pixels 0.
  float* d_row = out;
  float* d_col = out + HW;
  for (int64_t h = 0; h < H; ++h) {
    const int32_t* crow = comp + h * W;
    for (int64_t w = 0; w < W; ++w) {
      const int64_t p = h * W + w;
      const int32_t k = crow[w];
      if (k < 0) {
        d_row[p] = 0.f;
        d_col[p] = 0.f;
        continue;
      }
      d_row[p] = static_cast<float>((static_cast<double>(h) - s.cen_row[k]) * s.max_row[k]);
      d_col[p] = static_cast<float>((static_cast<double>(w) - s.cen_col[k]) * s.max_col[k]);
    }
  }
}

Tensor intra_class_positional_cpu(const Tensor& labels, int64_t ignore_label, double eps) {
  check_defined(labels, kOp, "labels");
  TORCH_CHECK(labels.device().is_cpu(), "semnorm.", kOp, ": the CPU kernel got labels on ", labels.device());
  check_dim(labels, 3, kOp, "labels");
  check_nonempty(labels, kOp, "labels");
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, "semnorm.", kOp, ": eps must be finite and non-negative, got ",
                    eps);
  const int64_t N = labels.size(0), H = labels.size(1), W = labels.size(2);
  TORCH_CHECK(H * W <= std::numeric_limits<int32_t>::max(), "semnorm.", kOp,
              ": labels must have fewer than 2^31 pixels per image, got ", H, " x ", W);
  const Tensor lab = labels.contiguous();
  Tensor out = at::empty({N, 2, H, W}, lab.options().dtype(at::kFloat));
  float* op = out.data_ptr<float>();
  dispatch_label_type(lab.scalar_type(), kOp, [&](auto tag) {
    using label_t = decltype(tag);
    const label_t* lp = lab.data_ptr<label_t>();
    // Images are independent: one task per image, each with private scratch. Each task checks its
    // own image for negative labels first (one parallel region in all) and skips it if it finds one.
    std::vector<int64_t> bad(N, -1);
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      Scratch scratch;
      for (int64_t n = begin; n < end; ++n) {
        const label_t* img = lp + n * H * W;
        bad[n] = first_negative_label(img, H * W);
        if (bad[n] < 0) positional_one_image(img, op + n * 2 * H * W, H, W, ignore_label, eps, scratch);
      }
    });
    for (int64_t n = 0; n < N; ++n) {
      const int64_t flat = n * H * W + bad[n];
      TORCH_CHECK_VALUE(bad[n] < 0, "semnorm.", kOp, ": labels must be non-negative, found ",
                        bad[n] < 0 ? 0 : static_cast<int64_t>(lp[flat]), " at flat index ", flat);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(semnorm, CPU, m) {
  m.impl("intra_class_positional", &intra_class_positional_cpu);
}

}  // namespace semnorm
