"""Compensation: the least-squares refit equals a hand-solved problem, and lowers the error it minimises."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ecanet import create_model
from tests.helpers import require_extra

require_extra("prune")
from ecanet.pruning import prune, refit


def test_refit_solves_the_least_squares_problem_by_hand():
    torch.manual_seed(0)
    layer = nn.Conv2d(4, 3, 3, padding=1, bias=True).double()
    teacher = nn.Conv2d(4, 3, 3, padding=1, bias=True).double()
    xs = [torch.randn(2, 4, 6, 6, dtype=torch.float64) for _ in range(3)]
    pairs = [(x, teacher(x).detach() + 0.1 * torch.randn(2, 3, 6, 6, dtype=torch.float64)) for x in xs]
    # by hand: one row per output position (3x3x4 inputs + 1 for the bias), solved by lstsq
    rows = torch.cat([F.unfold(x, 3, padding=1).transpose(1, 2).flatten(0, 1) for x, _ in pairs])
    rows = torch.cat([rows, torch.ones(len(rows), 1, dtype=torch.float64)], 1)
    targets = torch.cat([y.flatten(2).transpose(1, 2).flatten(0, 1) for _, y in pairs])
    solution = torch.linalg.lstsq(rows, targets).solution
    before = ((rows @ torch.cat([layer.weight.flatten(1), layer.bias[:, None]], 1).T.detach() - targets) ** 2).sum()
    result = refit(layer, pairs, ridge=0.0, max_rows=None)
    torch.testing.assert_close(layer.weight.detach().flatten(1), solution[:-1].T, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(layer.bias.detach(), solution[-1], rtol=1e-8, atol=1e-10)
    after = ((rows @ solution - targets) ** 2).sum()
    energy = (targets**2).sum()
    assert result["error_before"] == pytest.approx(float(before / energy), rel=1e-8)
    assert result["error_after"] == pytest.approx(float(after / energy), rel=1e-8)
    assert result["error_after"] < result["error_before"]


def test_refit_of_a_linear_layer():
    torch.manual_seed(0)
    layer = nn.Linear(5, 2).double()
    x = torch.randn(40, 5, dtype=torch.float64)
    w, b = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    refit(layer, [(x, x @ w.T + b)], ridge=0.0)
    torch.testing.assert_close(layer.weight.detach(), w)
    torch.testing.assert_close(layer.bias.detach(), b)


def test_compensation_brings_the_pruned_network_closer_to_the_original():
    torch.manual_seed(0)
    model = create_model("eca_resnet20", num_classes=10)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32))
    model.eval()
    g = torch.Generator().manual_seed(0)
    calibration = torch.randn(64, 3, 32, 32, generator=g)
    held_out = torch.randn(32, 3, 32, 32, generator=g)
    plain, _ = prune(model, calibration, "l1", ratio=0.4)
    fitted, report = prune(model, calibration, "l1", ratio=0.4, compensate=True)
    refitted = {r["layer"] for r in report.compensation}
    assert "layer1.0.conv2" in refitted and "fc" in refitted  # they lost input channels
    assert "conv1" not in refitted  # the stem lost only output channels
    assert all(r["error_after"] <= r["error_before"] for r in report.compensation)
    assert any(r["error_after"] < 0.9 * r["error_before"] for r in report.compensation)
    with torch.no_grad():
        reference = model(held_out)
        assert F.mse_loss(fitted(held_out), reference) < F.mse_loss(plain(held_out), reference)
