// The semnorm operator library: every schema of the label-indexed op family lives here, so the
// CPU, CUDA and Python (fake, autograd) registrations all refer to one definition.
//
// Conventions shared by the schemas (SPEC.md sections 2 and 4):
//  * x is (N, C, H, W) floating point; mean and rstd are (N, C) in x's opmath dtype (float32 for
//    half/bfloat16/float32 inputs, float64 for float64), so batch and instance statistics share
//    one layout (batch statistics are expanded over N by the caller).
//  * labels is (N, Hl, Wl) uint8/int32/int64 with values in [0, num_classes); ops that need labels at
//    (H, W) sample them with PyTorch's legacy nearest rule inside the kernel. Kernels check the range.
//  * parameter tables (banks, per-region codes) are in x's opmath dtype.
//  * every backward is its own op, so the autograd formula lives in Python and the kernels stay pure.
//  * stats_of_x (the modulate ops): 0 when mean and rstd are independent inputs (their gradients are
//    returned), 1 / 2 when they are x's own instance / batch statistics, computed without a graph:
//    the autograd formula then adds the statistics' gradient to grad_x in place, so x gets one
//    (N, C, H, W) gradient buffer instead of two. Forward results do not depend on it.

#include <Python.h>
#include <torch/library.h>

// `import semnorm._C` only has to run the static registrations below; the module itself is empty.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(semnorm, m) {
  // Per-channel (per_instance=false: over N,H,W -> (C,)) or per-(n,c) (per_instance=true -> (N,C))
  // mean and M2 = sum of squared deviations, accumulated in opmath. When noise is given the
  // statistics are those of x + noise_scale[c] * noise[n,h,w] (SEAN's noise before the norm).
  m.def(
      "channel_moments(Tensor x, bool per_instance, Tensor? noise=None, Tensor? noise_scale=None) "
      "-> (Tensor mean, Tensor m2)");
  m.def(
      "channel_moments_backward(Tensor grad_mean, Tensor grad_m2, Tensor x, Tensor mean, bool per_instance, "
      "Tensor? noise=None, Tensor? noise_scale=None) -> (Tensor grad_x, Tensor grad_noise_scale)");

  // y = (x_eff - mean) * rstd * (offset + g) + b, x_eff = x + noise_scale[c] * noise[n,h,w] (optional),
  // g = gamma (dense, like x) or, when blend is given, blend[0] * gamma + (1 - blend[0]) * gamma2 and
  // likewise b with blend[1], beta, beta2 (SEAN's two branches).
  m.def(
      "normalize_modulate(Tensor x, Tensor mean, Tensor rstd, Tensor gamma, Tensor beta, Tensor? gamma2=None, "
      "Tensor? beta2=None, Tensor? blend=None, Tensor? noise=None, Tensor? noise_scale=None, float offset=1.0, "
      "int stats_of_x=0) -> Tensor");
  m.def(
      "normalize_modulate_backward(Tensor grad_y, Tensor x, Tensor mean, Tensor rstd, Tensor gamma, Tensor beta, "
      "Tensor? gamma2, Tensor? beta2, Tensor? blend, Tensor? noise, Tensor? noise_scale, float offset) "
      "-> (Tensor grad_x, Tensor grad_mean, Tensor grad_rstd, Tensor grad_gamma, Tensor grad_beta, "
      "Tensor grad_gamma2, Tensor grad_beta2, Tensor grad_blend, Tensor grad_noise_scale)");

  // CLADE guided sampling fused with normalize + modulate:
  //   y = (x - mean) * rstd * (offset + weight[l, c] * sg[n,h,w]) + bias[l, c] * sb[n,h,w]
  // with l = labels sampled at (h, w); sg / sb are the optional ICPE factors (1 when absent).
  m.def(
      "class_modulate(Tensor x, Tensor mean, Tensor rstd, Tensor labels, Tensor weight, Tensor bias, "
      "Tensor? scale_gamma=None, Tensor? scale_beta=None, float offset=0.0, int stats_of_x=0) -> Tensor");
  m.def(
      "class_modulate_backward(Tensor grad_y, Tensor x, Tensor mean, Tensor rstd, Tensor labels, Tensor weight, "
      "Tensor bias, Tensor? scale_gamma, Tensor? scale_beta, float offset) -> (Tensor grad_x, Tensor grad_mean, "
      "Tensor grad_rstd, Tensor grad_weight, Tensor grad_bias, Tensor grad_scale_gamma, Tensor grad_scale_beta)");

  // pooled[n, l, c] = sum (or mean) of x[n, c, h, w] over the pixels whose label is l; counts[n, l]
  // is the pixel count (int64). Absent labels give 0. Adjoint of region_broadcast.
  m.def(
      "region_pool(Tensor x, Tensor labels, int num_classes, bool mean) -> (Tensor pooled, Tensor counts)");
  // out[n, c, h, w] = codes[n, label(h, w), c]; out is (N, C, height, width) in codes' dtype.
  m.def("region_broadcast(Tensor codes, Tensor labels, SymInt height, SymInt width) -> Tensor");

  // out[n, o, h, w] = sum_{ty,tx} table[t, o, ty*k + tx, label(h + ty - k//2, w + tx - k//2)], zero outside
  // the image, t = n if table has N entries else 0. table is (T, Cout, k*k, L): a k x k convolution of
  // one-hot labels (table = weight rearranged) or of broadcast region codes (table = per-region
  // projections, T = N).
  m.def("label_tap_gather(Tensor table, Tensor labels, int kernel_size, SymInt height, SymInt width) -> Tensor");
  m.def(
      "label_tap_gather_backward(Tensor grad_out, Tensor labels, int num_tables, int num_classes, int kernel_size) "
      "-> Tensor");

  // SCN: [gamma; beta][n, :, h, w] = sum_k vectors[n, k, h, w] * bank[k, :] with bank (K, 2C);
  // y = (x - mean) * rstd * (offset + gamma) + beta.
  m.def(
      "semantic_modulate(Tensor x, Tensor mean, Tensor rstd, Tensor vectors, Tensor bank, float offset=1.0, "
      "int stats_of_x=0) -> Tensor");
  m.def(
      "semantic_modulate_backward(Tensor grad_y, Tensor x, Tensor mean, Tensor rstd, Tensor vectors, Tensor bank, "
      "float offset) -> (Tensor grad_x, Tensor grad_mean, Tensor grad_rstd, Tensor grad_vectors, Tensor grad_bank)");

  // SCC: y[n, c, h, w] = sum_k vectors[n, k, h, w] * candidates[n, k, c, h, w].
  m.def("candidate_combine(Tensor vectors, Tensor candidates) -> Tensor");
  m.def(
      "candidate_combine_backward(Tensor grad_y, Tensor vectors, Tensor candidates) "
      "-> (Tensor grad_vectors, Tensor grad_candidates)");

  // CLADE-ICPE: (N, 2, H, W) float32 map; for every 8-connected component of every class (except
  // ignore_label, -1 for none), each pixel's (row, col) offset from the component centroid divided by
  // the component's largest absolute offset along that axis plus eps. Not differentiable.
  m.def("intra_class_positional(Tensor labels, int ignore_label=-1, float eps=1e-5) -> Tensor");
}
