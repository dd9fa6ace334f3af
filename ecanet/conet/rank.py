"""CONet's metrics of what a layer has learned (Hosseini et al., "CONet: Channel Optimization for Convolutional
Neural Networks", ICCVW 2021; the estimator from its predecessor AdaS, Hosseini & Plataniotis 2020): the rank of
the low-rank part of a convolution's weight, normalised to [0, 1] ("Rank"), and its average slope over the
epochs of a trial ("Rank Average Slope").

The low-rank part is found by empirical variational Bayesian matrix factorisation (EVBMF; Nakajima, Sugiyama,
Babacan, Tomioka, "Global analytic solution of fully-observed variational Bayesian matrix factorization",
JMLR 2013), which separates signal from noise without a tuning knob: for Y (L x M, L <= M, α = L/M) with
singular values γ_h, Y = U diag(γ) Vᵀ + noise of variance σ²,

    σ² = argmin_σ²  Σ_{h: x_h <= x̄} (x_h - ln x_h) + Σ_{h: x_h > x̄} (x_h - τ_h + ln((τ_h + 1)/x_h) + α ln(τ_h/α + 1))
                    + R / (M σ²) + (L - H) ln σ²,                                                   (1)
    x_h = γ_h² / (M σ²),   τ_h = ½ (x_h - (1 + α) + sqrt((x_h - (1 + α))² - 4α)),
    x̄ = (1 + τ̄)(1 + α/τ̄),  τ̄ ≈ 2.5129 √α  (the root of the paper's threshold equation),

R the energy outside the H singular values kept (0 for a full SVD), and the rank is the number of singular
values above the threshold γ̄ = sqrt(M σ² x̄)                                                          (2).

A convolution's weight (C_out, C_in, k, k) is unfolded along its output channels into a C_out x C_in k² matrix:
Rank = rank(2) / C_out, in [0, 1]. The search sizes output channels, so that is the unfolding it reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

TAU_BAR = 2.5129  # τ̄ / √α: the solution of the threshold equation in Nakajima et al. (2013), Theorem 2


def _tau(x: Tensor, alpha: float) -> Tensor:
    return 0.5 * (x - (1 + alpha) + torch.sqrt((x - (1 + alpha)) ** 2 - 4 * alpha))


def _objective(sigma2: float, s2: Tensor, L: int, M: int, residual: float, x_bar: float) -> float:
    """The EVBMF free energy (1) at noise variance ``sigma2`` (up to constants)."""
    alpha = L / M
    x = s2 / (M * sigma2)
    above, below = x[x > x_bar], x[x <= x_bar]
    tau = _tau(above, alpha)
    value = (below - torch.log(below)).sum() + (above - tau + torch.log((tau + 1) / above)).sum()
    value = value + alpha * torch.log(tau / alpha + 1).sum()
    return float(value) + residual / (M * sigma2) + (L - len(s2)) * math.log(sigma2)


def evbmf_rank(matrix: Tensor) -> int:
    """The rank EVBMF finds in ``matrix`` (the number of its singular values above the noise threshold (2)),
    with the noise variance estimated by minimising (1) (scipy's bounded scalar minimiser)."""
    from scipy.optimize import minimize_scalar

    y = matrix.detach().double().cpu()
    if y.shape[0] > y.shape[1]:
        y = y.T
    L, M = y.shape
    s = torch.linalg.svdvals(y)
    s2 = s**2
    if float(s2.sum()) == 0.0:
        return 0
    alpha = L / M
    tau_bar = TAU_BAR * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    # The variance lies between what the weakest singular values alone would explain and all the energy.
    h_top = max(0, min(math.ceil(L / (1 + alpha)) - 1, L) - 1)
    upper = float(s2.sum()) / (L * M)
    lower = max(float(s2[h_top]) / (M * x_bar), float(s2[h_top:].mean()) / M, 1e-30)
    if lower >= upper:
        sigma2 = upper
    else:
        found = minimize_scalar(
            _objective, bounds=(lower, upper), args=(s2, L, M, 0.0, x_bar), method="bounded", options={"xatol": 1e-12}
        )
        sigma2 = float(found.x)
    return int((s > math.sqrt(M * sigma2 * x_bar)).sum())


def unfold_output(weight: Tensor) -> Tensor:
    """A (C_out, C_in, k, k) convolution weight (or a (C_out, C_in) linear one) as a C_out x C_in k² matrix."""
    return weight.reshape(weight.shape[0], -1)


def layer_rank(weight: Tensor) -> float:
    """CONet's "Rank" of a layer: the EVBMF rank of its output unfolding over its output channels, in [0, 1]."""
    return evbmf_rank(unfold_output(weight)) / weight.shape[0]


def rank_average_slope(ranks: Sequence[float]) -> float:
    """CONet's "Rank Average Slope": the mean change of Rank per epoch over a trial's epochs,
    (R_E - R_1) / (E - 1) (the mean of the consecutive differences)."""
    if len(ranks) < 2:
        raise ValueError(f"rank average slope: needs the Rank of at least 2 epochs, got {len(ranks)}")
    return (ranks[-1] - ranks[0]) / (len(ranks) - 1)
