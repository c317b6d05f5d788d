// Argument checks of channel_moments and normalize_modulate, shared by csrc/cpu/stats_kernel.cpp and
// csrc/cuda/stats_kernel.cu so both devices accept the same inputs with the same messages.
// Plain host C++ (nvcc compiles it too); narrow headers only, like common.h.
#pragma once

#include "../common.h"

#include <optional>
#include <tuple>
#include <utility>

namespace semnorm {

// Optional (C,) per-channel table (noise_scale) in x's opmath dtype; returns it contiguous or undefined.
inline Tensor check_channel_table(const std::optional<Tensor>& t, const Tensor& x, const char* op,
                                  const char* name) {
  if (!t.has_value() || !t->defined()) return Tensor();
  check_same_device(x, *t, op, "x", name);
  check_shape(*t, {x.size(1)}, op, name);
  check_dtype(*t, opmath_dtype(x.scalar_type()), op, name);
  return t->contiguous();
}

// noise and noise_scale come together or not at all.
inline std::pair<Tensor, Tensor> check_noise(const std::optional<Tensor>& noise,
                                             const std::optional<Tensor>& noise_scale, const Tensor& x,
                                             const char* op) {
  const bool has_noise = noise.has_value() && noise->defined();
  const bool has_scale = noise_scale.has_value() && noise_scale->defined();
  TORCH_CHECK(has_noise == has_scale, "semnorm.", op, ": noise and noise_scale must be given together (got ",
              has_noise ? "noise" : "noise_scale", " alone)");
  return {check_pixel_map(noise, x, op, "noise"), check_channel_table(noise_scale, x, op, "noise_scale")};
}

// A dense (N, C, H, W) modulation map (gamma, beta, ...) in x's dtype; returns it contiguous.
inline Tensor check_dense(const Tensor& t, const Tensor& x, const char* op, const char* name) {
  check_defined(t, op, name);
  check_same_device(x, t, op, "x", name);
  check_shape(t, x.sizes(), op, name);
  check_dtype(t, x.scalar_type(), op, name);
  return t.contiguous();
}

// A per-statistic tensor (mean, m2 or their gradients): (N, C) per instance, (C,) per channel, opmath.
inline Tensor check_moment(const Tensor& t, const Tensor& x, bool per_instance, const char* op, const char* name) {
  check_defined(t, op, name);
  check_same_device(x, t, op, "x", name);
  if (per_instance) {
    check_shape(t, {x.size(0), x.size(1)}, op, name);
  } else {
    check_shape(t, {x.size(1)}, op, name);
  }
  check_dtype(t, opmath_dtype(x.scalar_type()), op, name);
  return t.contiguous();
}

// The checked, contiguous inputs of normalize_modulate (undefined where an optional one is absent).
struct ModulateInputs {
  Tensor x, gamma, beta, gamma2, beta2, blend, noise, scale;
};

inline ModulateInputs check_modulate(const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& gamma,
                                     const Tensor& beta, const std::optional<Tensor>& gamma2,
                                     const std::optional<Tensor>& beta2, const std::optional<Tensor>& blend,
                                     const std::optional<Tensor>& noise, const std::optional<Tensor>& noise_scale,
                                     const char* op) {
  check_activation(x, op);
  check_stats(x, mean, rstd, op);
  ModulateInputs in;
  in.x = x.contiguous();
  in.gamma = check_dense(gamma, x, op, "gamma");
  in.beta = check_dense(beta, x, op, "beta");
  const bool has_blend = blend.has_value() && blend->defined();
  const bool has_g2 = gamma2.has_value() && gamma2->defined();
  const bool has_b2 = beta2.has_value() && beta2->defined();
  TORCH_CHECK(has_blend == has_g2 && has_blend == has_b2, "semnorm.", op,
              ": gamma2, beta2 and blend must be given together (SEAN's second branch), got",
              has_g2 ? " gamma2" : "", has_b2 ? " beta2" : "", has_blend ? " blend" : "", " alone");
  if (has_blend) {
    in.gamma2 = check_dense(*gamma2, x, op, "gamma2");
    in.beta2 = check_dense(*beta2, x, op, "beta2");
    check_same_device(x, *blend, op, "x", "blend");
    check_shape(*blend, {2}, op, "blend");
    check_dtype(*blend, opmath_dtype(x.scalar_type()), op, "blend");
    in.blend = blend->contiguous();
  }
  std::tie(in.noise, in.scale) = check_noise(noise, noise_scale, x, op);
  return in;
}

}  // namespace semnorm
