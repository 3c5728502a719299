"""Training losses (surface-weighted TSDF autoencoder loss, a Gaussian latent's KL term, x0-prediction
diffusion loss) and the condition augmentations used in training (noisy / partial point clouds, coarse voxels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weightspace.generators.latent_diffusion.schedule import q_sample


def autoencoder_loss(
    pred: torch.Tensor, target: torch.Tensor, *, band: float, near_surface_weight: float, sign_weight: float,
    of_batch: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss of a reconstructed normalised TSDF (B, R, R, R) against the target (B, R, R, R).

    L1 with weight 1 + near_surface_weight where |target| < band (the surface band, in
    normalised units), plus sign_weight x BCE of the inside/outside sign with logits -pred / band
    (so one band width of error is one logit).

    of_batch : the whole batch's targets (B', R, R, R) when pred and target are one data-parallel
        rank's share of it: both sums are then divided by the whole batch's L1 weight and voxel count,
        so the ranks' losses add up to the whole batch's.
    """
    w = 1.0 + near_surface_weight * (target.abs() < band).to(pred.dtype)  # (B, R, R, R)
    inside = (target < 0).to(pred.dtype)  # (B, R, R, R)
    if of_batch is not None:
        w_all = (1.0 + near_surface_weight * (of_batch.abs() < band).to(pred.dtype)).sum()
        bce_sum = F.binary_cross_entropy_with_logits(-pred / band, inside, reduction="sum")
        return (w * (pred - target).abs()).sum() / w_all + sign_weight * bce_sum / of_batch.numel()
    l1 = (w * (pred - target).abs()).sum() / w.sum()
    bce = F.binary_cross_entropy_with_logits(-pred / band, inside)
    return l1 + sign_weight * bce


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per element, the shape of `mean` (a diagonal Gaussian latent's regulariser)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)


def diffusion_loss(
    denoise, z0: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor,
    *, weighting: str = "uniform", gamma: float = 5.0, self_condition: bool = False,
) -> torch.Tensor:
    """x0-prediction loss E w(t) ||x0_hat(x_t, t, c) - x0||^2 (DDPM with x0 parameterisation); z0 : (B, C, r, r, r).

    weighting : `uniform` (w = 1, every checkpoint before 2026-12), `min-snr` (w = min(SNR, gamma), Hang et
    al. 2023 in its x0 form) or `truncated-v` (w = 1 + min(SNR, gamma): the v-prediction loss, which is the
    x0 loss times 1 + SNR, capped). Weights are divided by their mean over uniform t, so the step size
    of a run is comparable across weightings.

    self_condition : `denoise` takes a fourth argument x0_prev (self-conditioning, Chen et al. 2022): the
    loss is that of the call fed the denoiser's own gradient-free estimate; without it the call gets none.
    """
    z_t = q_sample(z0, t, noise, alphas_cumprod)  # (B, C, r, r, r)
    if self_condition:
        # the denoiser's own estimate first, without gradient, then the trained call reads it
        with torch.no_grad():
            x0_prev = denoise(z_t, t, cond)  # (B, C, r, r, r)
        x0_hat = denoise(z_t, t, cond, x0_prev)  # (B, C, r, r, r)
    else:
        x0_hat = denoise(z_t, t, cond)  # (B, C, r, r, r)
    err = (x0_hat - z0).pow(2)  # (B, C, r, r, r)
    if weighting == "uniform":
        return err.mean()
    w = snr_weights(alphas_cumprod, weighting, gamma).to(err.device, err.dtype)[t]  # (B,)
    return (w.view(-1, *([1] * (err.dim() - 1))) * err).mean()


def snr_weights(alphas_cumprod: torch.Tensor, weighting: str, gamma: float) -> torch.Tensor:
    """Per-time-step loss weights (T,) of `weighting` (see `diffusion_loss`), mean 1 over t = 0..T-1."""
    snr = alphas_cumprod / (1 - alphas_cumprod)  # (T,)
    if weighting == "min-snr":
        w = snr.clamp(max=gamma)
    elif weighting == "truncated-v":
        w = 1 + snr.clamp(max=gamma)
    elif weighting == "uniform":
        w = torch.ones_like(snr)
    else:
        raise ValueError(f"weighting must be one of uniform, min-snr, truncated-v, got {weighting!r}")
    return w / w.mean()


def augment_points(
    points: torch.Tensor, *, n: int, sigma_max: float, partial_prob: float, generator: torch.Generator
) -> torch.Tensor:
    """Training views of surface clouds (B, P, 3) -> (B, n, 3): a random subset, Gaussian noise with
    sigma ~ U[0, sigma_max], and with probability partial_prob a cut by a random plane that keeps
    between 50% and 90% of the points."""
    out = []
    for cloud in points:  # (P, 3)
        if torch.rand((), generator=generator) < partial_prob:
            direction = F.normalize(torch.randn(3, generator=generator), dim=0)  # (3,)
            proj = cloud @ direction  # (P,)
            keep = float(0.5 + 0.4 * torch.rand((), generator=generator))
            cloud = cloud[proj <= torch.quantile(proj, keep)]  # (P', 3)
        idx = torch.randint(cloud.shape[0], (n,), generator=generator)  # (n,)
        sigma = sigma_max * float(torch.rand((), generator=generator))
        out.append(cloud[idx] + sigma * torch.randn(n, 3, generator=generator))  # (n, 3)
    return torch.stack(out)  # (B, n, 3)


def voxels_from_grids(grids: torch.Tensor, resolution: int) -> torch.Tensor:
    """Coarse occupancy (B, V, V, V) float {0, 1}: the SDF grids (B, R, R, R) resampled at V points per
    axis on the same [-1, 1] lattice convention, solid where negative."""
    coarse = F.interpolate(grids.unsqueeze(1), size=(resolution,) * 3, mode="trilinear", align_corners=True)  # (B, 1, V, V, V)
    return (coarse.squeeze(1) < 0).to(torch.float32)  # (B, V, V, V)
