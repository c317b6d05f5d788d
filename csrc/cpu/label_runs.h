// Runs of equal labels, the CPU kernels' shared walk over label maps. Natural masks come in regions,
// so a (n, c) plane walked run by run does its per-label work (a table lookup, a scatter into a
// per-label accumulator) once per run instead of once per pixel, and the loop inside a run is a
// plain contiguous stream that vectorizes. The runs are found once per call and shared by all the
// channel planes of a sample; a random map degrades to runs of one pixel (correct, not faster).
#pragma once

#include <cstdint>
#include <vector>

namespace semnorm {

struct LabelRun {
  int64_t begin, end;  // pixel range [begin, end) of the flattened H*W plane
  int32_t label;
};

class LabelRuns {
 public:
  // lab: (N, HW) contiguous labels.
  LabelRuns(const int32_t* lab, int64_t N, int64_t HW) : first_(N + 1, 0) {
    for (int64_t n = 0; n < N; ++n) {
      const int32_t* lp = lab + n * HW;
      for (int64_t p = 0; p < HW;) {
        const int32_t l = lp[p];
        int64_t q = p + 1;
        while (q < HW && lp[q] == l) ++q;
        runs_.push_back({p, q, l});
        p = q;
      }
      first_[n + 1] = static_cast<int64_t>(runs_.size());
    }
  }
  const LabelRun* begin(int64_t n) const { return runs_.data() + first_[n]; }
  const LabelRun* end(int64_t n) const { return runs_.data() + first_[n + 1]; }

 private:
  std::vector<LabelRun> runs_;
  std::vector<int64_t> first_;
};

// Independent partial sums per reduction (one AVX register of floats): a float sum loop vectorizes
// only when its additions are spread over lanes like this (no -ffast-math reassociation here).
constexpr int kSumLanes = 8;

// sum of f(i) for i in [begin, end), accumulated in kSumLanes lanes.
template <typename acc, typename F>
inline acc lane_sum(int64_t begin, int64_t end, F&& f) {
  acc lanes[kSumLanes] = {};
  int64_t i = begin;
  for (; i + kSumLanes <= end; i += kSumLanes)
    for (int j = 0; j < kSumLanes; ++j) lanes[j] += f(i + j);
  for (; i < end; ++i) lanes[0] += f(i);
  acc total = 0;
  for (int j = 0; j < kSumLanes; ++j) total += lanes[j];
  return total;
}

}  // namespace semnorm
