"""PSNR / SSIM against closed forms."""

import math

import pytest
import torch

from openwan.eval.metrics import psnr, ssim


def test_psnr_of_a_constant_offset():
    a = torch.rand(3, 2, 16, 16) * 1.6 - 0.8
    assert psnr(a, a + 0.2) == pytest.approx(20.0, abs=1e-9)  # mse (0.2 / 2)^2 = 0.01
    assert psnr(a, a) == math.inf


def test_ssim_of_flat_frames_and_of_itself():
    a, b = torch.full((3, 1, 16, 16), 0.2), torch.full((3, 1, 16, 16), -0.4)
    mx, my, c1 = 0.6, 0.3, 0.01**2  # in [0, 1]; zero variances leave the luminance term only
    assert ssim(a, b) == pytest.approx(
        (2 * mx * my + c1) / (mx**2 + my**2 + c1), rel=1e-7
    )  # inputs are fp32
    noisy = torch.rand(3, 2, 16, 16) * 2 - 1
    assert ssim(noisy, noisy) == pytest.approx(1.0, abs=1e-12)
    assert ssim(noisy, noisy.flip(-1)) < 0.5
    with pytest.raises(ValueError, match="one shape"):
        ssim(a, noisy)
