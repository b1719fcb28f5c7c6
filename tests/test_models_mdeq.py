"""MDEQ-small building blocks: parameter counts against the papers, and properties the DEQ needs."""

import pytest
import torch

from models.mdeq import (
    MDEQ_SMALL,
    MDEQCell,
    MDEQConfig,
    MDEQHead,
    MDEQSkipNet,
    MDEQStem,
    MultiscaleLayout,
    count_parameters,
)

from train.exp_cifar import PAPER_PARAMETERS

# the papers' sizes (about 163.5K for the vanilla DEQ and 37K for the Skip net; train.exp_cifar cites them)
PAPER_VANILLA = PAPER_PARAMETERS["vanilla"]
PAPER_SKIP_NET = PAPER_PARAMETERS["skip_net"]


def test_vanilla_parameter_count_matches_paper():
    cell = MDEQCell()
    n = count_parameters(MDEQStem()) + count_parameters(cell) + count_parameters(MDEQHead())
    assert abs(n - PAPER_VANILLA) / PAPER_VANILLA < 0.02


def test_skip_net_parameter_count_matches_paper():
    n = count_parameters(MDEQSkipNet(MDEQCell()))
    assert abs(n - PAPER_SKIP_NET) / PAPER_SKIP_NET < 0.02


def test_layout_roundtrip_and_errors():
    layout = MultiscaleLayout(((2, 4, 4), (3, 2, 2)))
    parts = [torch.randn(5, 2, 4, 4), torch.randn(5, 3, 2, 2)]
    flat = layout.pack(parts)
    assert flat.shape == (5, layout.size) == (5, 2 * 16 + 3 * 4)
    for a, b in zip(layout.unpack(flat), parts):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"packed state must have shape \(batch, 44\)"):
        layout.unpack(torch.zeros(5, 43))
    with pytest.raises(ValueError, match="expected 2 branch tensors"):
        layout.pack(parts[:1])


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="dropout must be in"):
        MDEQConfig(dropout=1.5)
    with pytest.raises(ValueError, match="divisible by groups"):
        MDEQConfig(channels=(20, 24))
    with pytest.raises(TypeError):
        MDEQConfig(24)  # keyword-only


def _small_cell(dropout=0.2):
    torch.manual_seed(0)
    return MDEQCell(MDEQConfig(channels=(8, 8), resolution=8, expansion=2, groups=4, dropout=dropout))


def test_cell_treats_samples_independently():
    # per-sample residuals and convergence flags are only meaningful if f does not mix samples
    cell = _small_cell().train()
    inj = torch.randn(4, 8, 8, 8)
    x = cell.make_input(inj)
    z = torch.randn(4, cell.layout.size)
    whole = cell(z, x)
    parts = torch.cat([cell(z[i : i + 1], x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(whole, parts, rtol=1e-5, atol=1e-6)


def test_dropout_mask_is_fixed_within_a_solve_and_redrawn_per_input():
    cell = _small_cell(dropout=0.5).train()
    inj = torch.randn(3, 8, 8, 8)
    x = cell.make_input(inj)
    z = torch.randn(3, cell.layout.size)
    # f is a pure function of (z, x): same x, same value (the mask lives in x)
    torch.testing.assert_close(cell(z, x), cell(z, x), rtol=0, atol=0)
    x2 = cell.make_input(inj)
    assert not torch.equal(x, x2)
    _, m0, _ = cell.x_layout.unpack(x)
    kept = m0 != 0
    # inverted dropout: survivors are scaled by 1/(1-p), and about half are dropped
    torch.testing.assert_close(m0[kept], torch.full_like(m0[kept], 2.0))
    assert 0.35 < kept.float().mean().item() < 0.65
    cell.eval()
    _, m0, m1 = cell.x_layout.unpack(cell.make_input(inj))
    assert torch.all(m0 == 1) and torch.all(m1 == 1)


def test_cell_gradcheck_in_float64():
    # the implicit backward relies on exact VJPs of f with respect to z, x and the weights
    torch.manual_seed(0)
    config = MDEQConfig(channels=(4, 4), resolution=4, expansion=2, groups=2, dropout=0.0)
    cell = MDEQCell(config).double().eval()
    x = cell.make_input(torch.randn(2, 4, 4, 4, dtype=torch.float64))
    z = torch.randn(2, cell.layout.size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: cell(z, x), (z,), eps=1e-6, atol=1e-5)


def test_skip_net_and_head_shapes():
    cell = MDEQCell()
    x = cell.make_input(torch.randn(2, 24, 32, 32))
    z = MDEQSkipNet(cell)(x)
    assert z.shape == (2, cell.layout.size) == (2, 24 * 32 * 32 + 24 * 16 * 16)
    logits = MDEQHead()(cell.layout.unpack(z))
    assert logits.shape == (2, MDEQ_SMALL.num_classes)


@pytest.mark.parametrize("solver", ["broyden", "newton", "continuous"])
def test_every_solver_stops_on_the_chosen_test(solver):
    from train.exp_cifar import CIFARModelConfig, build_model

    small = MDEQConfig(channels=(8, 8), resolution=8, expansion=2, groups=4, head_channels=(4, 8), final_channels=16)
    for test in ("batch", "per_sample"):
        net = build_model(CIFARModelConfig(variant="deq", solver=solver, stopping_test=test, mdeq=small))
        assert net.implicit.solver.stopping_test == test
    assert CIFARModelConfig().stopping_test == "batch"  # the papers' test
    with pytest.raises(ValueError, match="stopping_test must be one of .*got 'max'"):
        CIFARModelConfig(stopping_test="max")
