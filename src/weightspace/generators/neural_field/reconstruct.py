"""Code priors (Gaussians fitted to the training codes) and reconstruction of a code from a point cloud.

Reconstruction is DeepSDF's test-time code optimisation (Park et al. 2019, eq. 10) with the
network frozen. Our observation has surface points only (no signs), so the data term is the
protocol's surface loss mean |f(p, z)| plus a free-space term that asks |f| at query points to
equal their (capped) distance to the nearest observed point; the latter stops the code from
growing surface where nothing was observed. The prior is the Mahalanobis distance under the
Gaussian fitted to the training codes.

Both terms see only |f|, so neither can tell inside from outside: on held-out tori and dumbbells
the code often settled on a field that matched every observed point with the sign flipped in
part of the box (a torus decoded as a solid block with the tube as a cavity, IoU 0.26 where a
code fitted to the true grid reached 0.78). The outside term adds the one sign a cloud does
give: free space reachable from the box boundary without passing near an observed point is
outside, so f there must be at least its distance to the cloud (see `outside_queries`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from weightspace.data.grid import grid_points, voxel_size
from weightspace.generators.neural_field.losses import mahalanobis, unsigned_distance
from weightspace.runtime.seeding import item_generator, item_rng

OUTSIDE_RESOLUTION = 48  # voxels per axis of the flood fill behind `outside_queries`
OUTSIDE_GAP = 5.0  # blocking radius in median nearest-neighbour spacings of the cloud

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (B, P, 3), (B, d_z) -> (B, P)


def fit_gaussian(codes: torch.Tensor, shrinkage: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d_z,) and lower Cholesky factor (d_z, d_z) of a Gaussian fitted to codes (n, d_z).

    The covariance is shrunk toward its diagonal, (1 - a) S + a diag(S), so it stays positive
    definite with few codes per family; a single code gets a small isotropic spread.
    """
    codes = codes.detach().double()
    mean = codes.mean(0)  # (d_z,)
    if codes.shape[0] < 2:
        cov = torch.eye(codes.shape[1], dtype=torch.float64) * 1e-4
    else:
        s = torch.cov(codes.T)  # (d_z, d_z)
        cov = (1 - shrinkage) * s + shrinkage * torch.diag(torch.diag(s))
        cov = cov + torch.eye(codes.shape[1], dtype=torch.float64) * 1e-6 * (float(torch.diag(s).mean()) + 1e-12)
    return mean.float(), torch.linalg.cholesky(cov).float()


def fit_priors(
    codes: torch.Tensor, labels: torch.Tensor | None, n_families: int, shrinkage: float
) -> dict[str, torch.Tensor]:
    """Global and per-family code Gaussians: global_mean (d_z,), global_chol, family_mean (F, d_z), family_chol.

    A family without training codes gets the global Gaussian.
    """
    g_mean, g_chol = fit_gaussian(codes, shrinkage)
    f_mean = g_mean.repeat(n_families, 1)  # (F, d_z)
    f_chol = g_chol.repeat(n_families, 1, 1)  # (F, d_z, d_z)
    if labels is not None:
        for f in range(n_families):
            members = codes[labels == f]  # (n_f, d_z)
            if members.shape[0] > 0:
                f_mean[f], f_chol[f] = fit_gaussian(members, shrinkage)
    return {"global_mean": g_mean, "global_chol": g_chol, "family_mean": f_mean, "family_chol": f_chol}


def sample_codes(mean: torch.Tensor, chol: torch.Tensor, seeds: Sequence[int], temperature: float) -> torch.Tensor:
    """z = mean + t L eps with eps ~ N(0, I) from one generator per item: mean (B, d_z), chol (B, d_z, d_z) -> (B, d_z)."""
    eps = torch.stack([torch.randn(mean.shape[-1], generator=item_generator(s, "nf-code")) for s in seeds])  # (B, d_z)
    eps = eps.to(mean.device)
    return mean + temperature * (chol @ eps.unsqueeze(-1)).squeeze(-1)


def free_space_queries(points: torch.Tensor, seeds: Sequence[int], n: int) -> torch.Tensor:
    """Seeded query points per item: half uniform in the box, half near the observation: (B, n, 3)."""
    out = []
    for b, s in enumerate(seeds):
        g = item_generator(s, "nf-free-space")
        uniform = torch.rand(n - n // 2, 3, generator=g) * 2 - 1  # (n/2, 3)
        pick = torch.randint(points.shape[1], (n // 2,), generator=g)
        near = points[b, pick].cpu() + 0.05 * torch.randn(n // 2, 3, generator=g)  # (n/2, 3)
        out.append(torch.cat([uniform, near.clamp(-1, 1)]))
    return torch.stack(out).to(points.device)


def outside_region(cloud: np.ndarray, resolution: int = OUTSIDE_RESOLUTION, gap: float = OUTSIDE_GAP):
    """Voxels of [-1, 1]^3 known to be outside a closed point cloud, by flood fill from the box boundary.

    A voxel centre blocks the fill when it lies within tau of an observed point, with tau =
    `gap` x the cloud's median nearest-neighbour spacing (at least 1.5 voxels), wide enough that
    the fill does not leak through the random gaps between samples. The free voxels the fill
    reaches are outside. The answer is trusted only when the fill also leaves some free voxels
    unreached: that is evidence the cloud encloses something. A one-sided or cut scan is an open
    surface, the fill runs around it and through the shape, and the cloud gets no labels.
    Enclosed voxels are not labelled inside: a hollow shape's cavity is enclosed and outside.

    cloud : (P, 3) float world units
    Returns (outside (R, R, R) bool, distance (R, R, R) float32 from each voxel centre to the
    cloud, closed: bool); `outside` is all False when the cloud is not closed.
    """
    # one tree of the distinct points: the same distances, and a cloud drawn with repeats keeps a nonzero spacing
    distinct = np.unique(cloud, axis=0)
    tree = cKDTree(distinct)
    spacing = float(np.median(tree.query(distinct, k=2)[0][:, 1])) if len(distinct) > 1 else 2.0
    tau = max(gap * spacing, 1.5 * voxel_size(resolution))
    dist = tree.query(grid_points(resolution).reshape(-1, 3))[0].reshape((resolution,) * 3).astype(np.float32)  # (R, R, R)
    free = dist >= tau
    parts, _ = ndimage.label(free)
    faces = [parts[0], parts[-1], parts[:, 0], parts[:, -1], parts[:, :, 0], parts[:, :, -1]]
    border = np.unique(np.concatenate([f.ravel() for f in faces]))
    outside = np.isin(parts, border[border > 0])
    closed = bool((free & ~outside).any())
    return (outside if closed else np.zeros_like(outside)), dist, closed


def outside_queries(points: torch.Tensor, seeds: Sequence[int], n: int, band: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded query points in each closed cloud's known-outside region, in a band around the cloud.

    Draws n voxel centres (jittered within their voxel) among the outside voxels less than `band`
    farther from the cloud than the nearest outside voxel: the free space hugging the shape,
    including a torus's hole, where a sign-flipped field goes wrong. points (B, P, 3).
    Returns queries (B, n, 3), their distance to the cloud (B, n) and a mask (B,) float
    that is 0 for clouds without labels (their queries are placeholders at the origin).
    """
    qs, ds, mask = [], [], []
    for b, s in enumerate(seeds):
        cloud = points[b].detach().cpu().double().numpy()
        outside, dist, closed = outside_region(cloud)
        if not closed:
            qs.append(np.zeros((n, 3)))
            ds.append(np.zeros(n))
            mask.append(0.0)
            continue
        idx = np.flatnonzero(outside & (dist < dist[outside].min() + band))
        rng = item_rng(s, "nf-outside")
        ijk = np.stack(np.unravel_index(idx[rng.integers(0, len(idx), size=n)], outside.shape), -1)  # (n, 3)
        voxel = voxel_size(outside.shape[0])
        q = np.clip(-1.0 + (ijk + rng.uniform(-0.5, 0.5, size=(n, 3))) * voxel, -1.0, 1.0)  # (n, 3)
        qs.append(q)
        ds.append(cKDTree(cloud).query(q)[0])
        mask.append(1.0)
    dev = points.device
    as_t = lambda a: torch.as_tensor(np.stack(a), dtype=torch.float32, device=dev)  # noqa: E731
    return as_t(qs), as_t(ds), torch.tensor(mask, dtype=torch.float32, device=dev)


def outside_term(field: Field, queries: torch.Tensor, dist: torch.Tensor, z: torch.Tensor, clamp: float) -> torch.Tensor:
    """Per-item mean of relu(min(d, clamp) - f(o)) over known-outside queries o (B, n, 3): f must be at
    least the (capped) distance to the cloud there, on the positive side. Returns (B,)."""
    return torch.relu(dist.clamp(max=clamp) - field(queries, z)).mean(-1)


def observation_terms(
    field: Field, points: torch.Tensor, queries: torch.Tensor, target: torch.Tensor, z: torch.Tensor, clamp: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item surface loss mean |f(p)| (B,) and free-space loss mean ||f(q)| - d(q)| (B,).

    |f(q)| is clamped only where the target distance is itself capped (one-sided, as in
    `losses.clamped_l1`), so no term loses its gradient where the field overshoots.
    """
    surf = field(points, z).abs().mean(-1)  # (B,)
    fq = field(queries, z).abs()  # (B, Q)
    fq = torch.where(target >= clamp, fq.clamp(max=clamp), fq)
    free = (fq - target).abs().mean(-1)  # (B,)
    return surf, free


def reconstruct_codes(
    field: Field,
    points: torch.Tensor,
    *,
    seeds: Sequence[int],
    candidates: torch.Tensor,
    prior_mean: torch.Tensor,
    prior_chol: torch.Tensor,
    steps: int,
    lr: float,
    restarts: int,
    prior_weight: float,
    free_weight: float,
    clamp: float,
    outside_weight: float = 0.0,
    explore: int = 0,
    n_queries: int = 1024,
    n_screen: int = 128,
    n_batch: int = 512,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Optimise one code per observed cloud with the field frozen.

    points : (B, P, 3) float world units (surface samples, possibly noisy)
    candidates : (N, d_z) codes to start from (the training codes); each item starts from the
        `restarts + explore` candidates with the lowest loss on a seeded subset of its points,
        keeps the `restarts` best of them after a fifth of the steps (successive halving: a
        start in the wrong basin shows itself early, and exploring costs a fifth of a full
        restart), and returns the optimised code with the lowest final loss.
    n_batch : observed points and queries per item and step (a seeded random subset; all of them
        enter the final choice), which makes a step cost O(n_batch) instead of O(P).
    outside_weight : weight of `outside_term` on `n_queries` known-outside queries per closed cloud
        (0 skips the flood fill; open clouds get no outside term whatever the weight).
    callback : called as callback(step, loss (B, starts)) after each step (starts: the codes still
        optimised, `restarts + explore` before the pruning step and `restarts` after it).
    Returns (B, d_z) float codes.
    """
    B, P, _ = points.shape
    n_cand = candidates.shape[0]
    k, kept = min(restarts + explore, n_cand), min(restarts, n_cand)
    prune_at = steps // 5 if k > kept else -1
    queries = free_space_queries(points, seeds, n_queries)  # (B, Q, 3)
    target = unsigned_distance(queries, points, clamp)  # (B, Q)
    if outside_weight > 0:
        outs, out_d, out_mask = outside_queries(points, seeds, n_queries, band=2 * clamp)  # (B, Q, 3), (B, Q), (B,)
    else:
        outs, out_d, out_mask = queries, target, torch.zeros(B, device=points.device)
    use_outside = outside_weight > 0 and bool(out_mask.any())  # open clouds only: skip the term's field evaluations

    def loss_of(z: torch.Tensor, pts: torch.Tensor, qs: torch.Tensor, tg: torch.Tensor,
                os_: torch.Tensor, od: torch.Tensor, om: torch.Tensor) -> torch.Tensor:
        surf, free = observation_terms(field, pts, qs, tg, z, clamp)
        loss = surf + free_weight * free + prior_weight * mahalanobis(z, prior_mean, prior_chol)  # (n,)
        if use_outside:
            loss = loss + outside_weight * om * outside_term(field, os_, od, z, clamp)
        return loss

    with torch.no_grad():
        # screen every candidate on a seeded subset of points and queries, then keep the best k per item
        starts = []
        for b, s in enumerate(seeds):
            g = item_generator(s, "nf-screen")
            pi = torch.randperm(P, generator=g)[: min(n_screen, P)].to(points.device)
            qi = torch.randperm(n_queries, generator=g)[:n_screen].to(points.device)
            scores = []
            for zc in candidates.split(128):
                m = zc.shape[0]
                pts = points[b, pi].expand(m, -1, -1)  # (m, S, 3)
                scores.append(loss_of(zc, pts, queries[b, qi].expand(m, -1, -1), target[b, qi].expand(m, -1),
                                      outs[b, qi].expand(m, -1, -1), out_d[b, qi].expand(m, -1), out_mask[b].expand(m)))
            starts.append(candidates[torch.cat(scores).topk(k, largest=False).indices])  # (k, d_z)
        z0 = torch.stack(starts)  # (B, k, d_z)

    z = z0.reshape(B * k, -1).clone().requires_grad_(True)  # (B k, d_z)
    rep = lambda t: t.repeat_interleave(k, dim=0)  # noqa: E731  (B, ...) -> (B k, ...)
    pts_k, q_k, t_k = rep(points), rep(queries), rep(target)
    o_k, od_k, om_k = rep(outs), rep(out_d), rep(out_mask)
    # Adam (Kingma & Ba, alg. 1) written out: torch.optim's first step imports torch._dynamo, which
    # costs seconds and would dominate a one-shape reconstruction in a fresh process.
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    gens = [item_generator(s, "nf-recon-batch") for s in seeds]
    nb_p, nb_q = min(n_batch, P), min(n_batch, n_queries)
    with torch.enable_grad():
        for step in range(steps):
            pi = torch.stack([torch.randperm(P, generator=g)[:nb_p] for g in gens]).to(points.device)  # (B, nb)
            qi = torch.stack([torch.randperm(n_queries, generator=g)[:nb_q] for g in gens]).to(points.device)
            pi, qi = rep(pi), rep(qi)  # (B k, nb)
            pts_s = torch.gather(pts_k, 1, pi.unsqueeze(-1).expand(-1, -1, 3))  # (B k, nb, 3)
            q_s = torch.gather(q_k, 1, qi.unsqueeze(-1).expand(-1, -1, 3))  # (B k, nb, 3)
            o_s = torch.gather(o_k, 1, qi.unsqueeze(-1).expand(-1, -1, 3))  # (B k, nb, 3): same subset as the queries
            loss = loss_of(z, pts_s, q_s, torch.gather(t_k, 1, qi), o_s, torch.gather(od_k, 1, qi), om_k)  # (B k,)
            (g,) = torch.autograd.grad(loss.sum(), [z])
            lr_t = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))  # cosine decay
            with torch.no_grad():
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat, v_hat = m / (1 - beta1 ** (step + 1)), v / (1 - beta2 ** (step + 1))
                z.sub_(lr_t * m_hat / (v_hat.sqrt() + eps))
            if callback is not None:
                callback(step, loss.detach().reshape(B, k))
            if step == prune_at:  # keep the `kept` starts per item with the lowest loss on all points and queries
                with torch.no_grad():
                    full = loss_of(z, pts_k, q_k, t_k, o_k, od_k, om_k).reshape(B, k)  # (B, k)
                    keep = (full.topk(kept, largest=False).indices + k * torch.arange(B, device=full.device)[:, None]).reshape(-1)
                z = z.detach()[keep].requires_grad_(True)  # (B kept, d_z)
                m, v = m[keep], v[keep]
                pts_k, q_k, t_k, o_k, od_k, om_k = (t[keep] for t in (pts_k, q_k, t_k, o_k, od_k, om_k))
                k = kept
    with torch.no_grad():
        final = loss_of(z, pts_k, q_k, t_k, o_k, od_k, om_k).reshape(B, k)  # (B, k)
        best = final.argmin(-1)  # (B,)
        return z.detach().reshape(B, k, -1)[torch.arange(B), best]  # (B, d_z)
