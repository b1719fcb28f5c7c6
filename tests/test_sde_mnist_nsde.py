"""models.mnist_nsde: the paper's NSDE classifier, its variants and eval-time trajectory averaging."""

import pytest
import torch

from models._base import ZooOutput
from models.mnist_nsde import BUILDERS, MNISTNSDE, MNISTNSDEConfig, build


def _images(n=6, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_paper_architecture_and_parameter_count():
    m = build(MNISTNSDEConfig())
    # 784->32, drift 32->64->32, diagonal diffusion 32->32, head 32->10 (all with biases)
    expected = (784 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)
    assert sum(p.numel() for p in m.parameters()) == expected


@pytest.mark.parametrize("variant,key", [("nsde", None), ("ernsde", "error"), ("srnsde", "stiffness")])
def test_variants_report_only_their_regularizer_and_it_reaches_the_drift(variant, key):
    torch.manual_seed(0)
    m = BUILDERS[variant]()
    out = m(_images())
    assert isinstance(out, ZooOutput) and out.logits.shape == (6, 10)
    assert set(out.regularizers) == ({key} if key else set())
    assert out.nfe_forward == out.stats.nfe_forward > 0
    assert out.metrics["R_E"] == pytest.approx(out.stats.reg_error.item())
    if key:
        reg = out.regularizers[key]
        drift_w = m.sde.drift.net[0].weight
        (grad,) = torch.autograd.grad(reg, drift_w)
        assert grad.abs().sum() > 0


def test_eval_averages_logits_over_independent_trajectories():
    torch.manual_seed(0)
    m = BUILDERS["nsde"](eval_trajectories=4).eval()
    x = _images(3)
    with torch.no_grad():
        torch.manual_seed(1)
        out = m(x)
        # the same Brownian draw, solved by hand: the batch repeated 4 times, logits averaged
        torch.manual_seed(1)
        z0 = m.embed(x.reshape(3, -1)).repeat(4, 1)
        zs, _ = m.sde(z0, torch.tensor([0.0, 1.0]))
        by_hand = m.readout(zs[-1]).reshape(4, 3, 10)
    torch.testing.assert_close(out.logits, by_hand.mean(0))
    assert not torch.allclose(by_hand[0], by_hand[1])  # the trajectories do differ
    m.train()
    assert m(x).stats.step_sizes.numel() > 0


def test_bad_config_and_input():
    with pytest.raises(ValueError, match=r"variant must be one of \('nsde', 'ernsde', 'srnsde'\), got 'x'"):
        MNISTNSDEConfig(variant="x")
    with pytest.raises(ValueError, match="scheme must be one of"):
        MNISTNSDEConfig(scheme="rk4")
    with pytest.raises(ValueError, match="eval_trajectories must be a positive int, got 0"):
        MNISTNSDEConfig(eval_trajectories=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'lam'"):
        BUILDERS["ernsde"](lam=10.0)
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 1, 28, 28\).*got \(2, 100\)"):
        MNISTNSDE()(torch.zeros(2, 100))


def test_authors_aggregation_follows_the_saving_callback():
    from models.mnist_nsde import SOSRI2_STABILITY_SIZE
    from train.exp_mnist_nsde import AUTHORS

    torch.manual_seed(0)
    m = BUILDERS["srnsde"](**AUTHORS["srnsde"])
    out = m(_images())
    st = out.stats
    # R_E: mean over [h_0, E_1 h_1, ..., E_n h_n]; R_S: max over [1, |S_1|, ...] / 10.6
    expected_e = (st.initial_step + (st.error_estimates * st.step_sizes.to(st.error_estimates)).sum()) / (st.n_accepted + 1)
    assert out.metrics["R_E_authors"] == pytest.approx(float(expected_e.detach()))
    expected_s = max(1.0, float(st.stiffness_estimates.abs().max())) / SOSRI2_STABILITY_SIZE
    assert float(out.regularizers["stiffness"]) == pytest.approx(expected_s)
    # Glorot init with zero biases (Flux's Dense default)
    assert float(m.embed.bias.abs().max()) == 0.0
    assert st.initial_step.requires_grad  # step_path="initial": the heuristic's dependence is in the graph


def test_sri_options_are_checked():
    with pytest.raises(ValueError, match="step_path='initial' needs an SRI scheme"):
        MNISTNSDEConfig(scheme="milstein", step_path="initial")
    with pytest.raises(ValueError, match="srnsde needs a stiffness estimate"):
        MNISTNSDEConfig(variant="srnsde", scheme="sriw1")
    with pytest.raises(ValueError, match="aggregation must be one of"):
        MNISTNSDEConfig(aggregation="median")
    with pytest.raises(ValueError, match="trajectories must be a positive int"):
        build(MNISTNSDEConfig())(_images(), trajectories=0)
