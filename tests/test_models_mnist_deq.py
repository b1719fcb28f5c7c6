"""MNIST fully connected DEQs: the equation they solve, their auxiliary losses, their options."""

import pytest
import torch
import torch.nn.functional as F

from models.mnist_deq import BUILDERS, FCCell, MNISTDEQConfig, MNISTFCDEQ, VARIANTS
from train import exp_mnist_deq
from train.exp_mnist_deq import PAPER


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g)


def test_cell_is_the_papers_formula():
    torch.manual_seed(0)
    cell = FCCell(5)
    z, x = torch.randn(3, 5), torch.randn(3, 5)
    expected = F.relu(z @ cell.w1.weight.T + cell.w1.bias) + F.relu(x @ cell.w2.weight.T + cell.w2.bias)
    torch.testing.assert_close(cell(z, x), expected)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("solver", ["newton", "broyden", "continuous"])
def test_output_is_a_fixed_point_of_f(variant, solver):
    torch.manual_seed(1)
    model = BUILDERS[variant](solver=solver, tol=1e-4, max_iter=200).eval()
    images = _images()
    with torch.no_grad():
        out = model(images)
        x = model.embed(images.flatten(1))
        # recompute z* independently by a long plain fixed-point iteration from zero
        z = torch.zeros(6, 128)
        for _ in range(500):
            z = model.cell(z, x)
        residual = (model.cell(z, x) - z).norm() / model.cell(z, x).norm()
    assert residual < 1e-5  # the reference itself converged (f is a contraction at init)
    torch.testing.assert_close(model.readout(z), out.logits, rtol=2e-3, atol=2e-3)
    assert out.nfe_forward == out.stats.nfe_forward >= 2
    if solver == "continuous":
        # Known limit (reported): near the steady state Tsit5's step grows to its stability bound
        # and the residual stalls around the integration tolerance, so a sample or two may stop
        # at t_max slightly above tol; z* is still reached to within the logits tolerance above.
        assert out.metrics["residual"] < 1e-2
    else:
        assert bool(out.stats.converged.all()) and out.stats.outcome.ok
        assert out.metrics["residual"] <= 1e-4 and out.metrics["converged"] == 1.0


def test_skip_losses_are_the_papers_l1_distances():
    torch.manual_seed(2)
    images = _images()
    skip = BUILDERS["skipdeq"](solver="newton", tol=1e-5)
    out = skip(images)
    x = skip.embed(images.flatten(1))
    # with the implicit backward the layer output is f(z*, x); the loss pulls g(x) toward it
    g = skip.skip(x)
    with torch.no_grad():
        z, _ = skip.deq(x)
    torch.testing.assert_close(out.regularizers["skip"], (z - g).abs().mean(), rtol=1e-3, atol=1e-5)
    reg = BUILDERS["skipregdeq"](solver="newton", tol=1e-5)
    out = reg(images)
    x = reg.embed(images.flatten(1))
    with torch.no_grad():
        z, _ = reg.deq(x)
        f0 = reg.cell(torch.zeros_like(z), x)
    torch.testing.assert_close(out.regularizers["skip"], (z - f0).abs().mean(), rtol=1e-3, atol=1e-5)
    assert "skip" not in BUILDERS["deq"](solver="newton")(images).regularizers


def test_skip_loss_trains_the_predictor_toward_z_star():
    torch.manual_seed(3)
    model = BUILDERS["skipdeq"](solver="newton", tol=1e-5)
    out = model(_images())
    out.regularizers["skip"].backward()
    assert model.skip[0].weight.grad is not None and model.skip[0].weight.grad.abs().sum() > 0


def test_jacobian_regularizer_only_when_asked():
    torch.manual_seed(4)
    with_jr = BUILDERS["deq"](solver="broyden", jacobian_reg=True)(_images())
    without = BUILDERS["deq"](solver="broyden")(_images())
    assert "jacobian" in with_jr.regularizers and with_jr.regularizers["jacobian"] > 0
    assert "jacobian" not in without.regularizers


def test_parameters_and_registry():
    vanilla = sum(p.numel() for p in BUILDERS["deq"]().parameters())
    # 784*128+128 embedding, two 128x128 layers with bias, 128*10+10 readout
    assert vanilla == 784 * 128 + 128 + 2 * (128 * 128 + 128) + 128 * 10 + 10
    skip = sum(p.numel() for p in BUILDERS["skipdeq"]().parameters())
    assert skip - vanilla == 128 * 128 + 128
    assert sum(p.numel() for p in BUILDERS["skipregdeq"]().parameters()) == vanilla
    assert set(PAPER) == set(VARIANTS)
    from train.mnist import Registry

    entries = Registry.discover().entries
    assert all(entries[v][1] is BUILDERS[v] for v in VARIANTS)


def test_old_spellings_still_build_the_same_model_and_name_the_new_one():
    from models import mnist_deq

    # the stopping test: one name, stopping_test, in the config, the builders and make_solver
    for make in (lambda **kw: MNISTDEQConfig(**kw), lambda **kw: BUILDERS["deq"](**kw).config,
                 lambda **kw: mnist_deq.make_solver("continuous", tol=0.005, max_iter=50, **kw)):
        with pytest.warns(DeprecationWarning, match=r"steady_state_test= is deprecated, use stopping_test="):
            old = make(steady_state_test="per_sample")
        assert old == make(stopping_test="per_sample")
    with pytest.warns(DeprecationWarning, match="continuous_solver: criterion= is deprecated, use stopping_test="):
        old = mnist_deq.continuous_solver("vcab3", tol=0.05, atol=0.05, max_iter=9, tsit5_ode_atol=0.005,
                                          criterion="batch")
    assert old == mnist_deq.continuous_solver("vcab3", tol=0.05, atol=0.05, max_iter=9, tsit5_ode_atol=0.005,
                                              stopping_test="batch")
    # Broyden: "broyden" everywhere; "discrete" (the CIFAR experiment's earlier name) is read as it, with a warning
    with pytest.warns(DeprecationWarning, match=r"solver='discrete' is deprecated, use solver='broyden'"):
        cfg = MNISTDEQConfig(solver="discrete")
    assert cfg == MNISTDEQConfig(solver="broyden") and cfg.solver == "broyden"
    with pytest.warns(DeprecationWarning, match=r"solver='discrete' is deprecated"):
        assert mnist_deq.make_solver("discrete", tol=1e-3, max_iter=7) == mnist_deq.make_solver(
            "broyden", tol=1e-3, max_iter=7)
    assert mnist_deq.solver_name("newton") == "newton"
    with pytest.warns(DeprecationWarning, match="make_backward is deprecated, use make_gradient"):
        assert mnist_deq.make_backward(tol=0.01) == mnist_deq.make_gradient(tol=0.01)


def test_cell_reads_raw_inputs_with_the_same_weights_from_the_same_seed():
    torch.manual_seed(5)
    cell = FCCell(6, in_features=9)
    torch.manual_seed(5)
    w1, w2 = torch.nn.Linear(6, 6), torch.nn.Linear(9, 6)  # W₁ first, then W₂
    for a, b in ((cell.w1, w1), (cell.w2, w2)):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    torch.manual_seed(5)
    assert torch.equal(FCCell(6).w1.weight, w1.weight)  # the default cell draws W₁ the same way
    with pytest.raises(ValueError, match="FCCell: in_features must be a positive int, got 0"):
        FCCell(6, in_features=0)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="variant must be one of"):
        MNISTDEQConfig(variant="resdeq")
    with pytest.raises(ValueError, match=r"solver must be one of \('continuous', 'newton', 'broyden'\), got 'anderson'"):
        BUILDERS["deq"](solver="anderson")
    with pytest.raises(ValueError, match=r"stopping_test must be one of \('batch', 'per_sample'\), got 'mean'"):
        MNISTDEQConfig(stopping_test="mean")
    with pytest.raises(TypeError):
        BUILDERS["deq"](colour="red")
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 1, 28, 28\)"):
        MNISTFCDEQ()(torch.zeros(2, 3, 32, 32))


def test_run_records_quote_the_paper_row_of_their_own_solver_and_regularization():
    from train import mnist

    registry = mnist.Registry.discover()
    paper_of = registry.entries["skipdeq"][2]

    def cfg(*opts):
        return mnist.parse_config(["--model", "skipdeq", *opts])

    assert paper_of(cfg("--solver", "continuous")) == exp_mnist_deq.PAPER["skipdeq"]
    assert paper_of(cfg("--solver", "continuous", "--jacobian-reg")) == exp_mnist_deq.PAPER_JR["skipdeq"]
    assert paper_of(cfg("--solver", "newton")) is None  # the paper has no discrete MNIST FC row
    assert exp_mnist_deq.PAPER["deq"]["test_nfe"] != exp_mnist_deq.PAPER_JR["deq"]["test_nfe"]


def test_continuous_steady_state_tests():
    from implicit.deq import SteadyState
    from implicit.ode import VCAB3, Tsit5
    from train import mnist

    torch.manual_seed(1)
    images = _images(n=8)
    # the papers' integrator by default: VCAB3 at OrdinaryDiffEq's default tolerances
    s = BUILDERS["deq"](solver="continuous").deq.solver
    assert isinstance(s.solver, VCAB3) and (s.ode_rtol, s.ode_atol) == (1e-3, 1e-6) and s.rtol == 0.005
    batch = BUILDERS["deq"](solver="continuous", integrator="tsit5")
    per_sample = BUILDERS["deq"](solver="continuous", integrator="tsit5", stopping_test="per_sample")
    per_sample.load_state_dict(batch.state_dict())
    # the papers' test: one batch-wide relative residual; Tsit5 at rtol = tol, atol = tol / 10
    s = batch.deq.solver
    assert isinstance(s, SteadyState) and s.stopping_test == "batch" and s.rtol == s.ode_rtol == 0.005
    assert s.ode_atol == pytest.approx(0.0005) and isinstance(s.solver, Tsit5)
    assert per_sample.deq.solver.stopping_test == "per_sample"
    with torch.no_grad():
        x = batch.embed(images.flatten(1))
        zb, sb = batch.deq(x)
        zp, sp = per_sample.deq(x)
        # what each test promised, checked on the returned z
        rb, fb = batch.cell(zb, x) - zb, batch.cell(zb, x)
        rp, fp = per_sample.cell(zp, x) - zp, per_sample.cell(zp, x)
    assert sb.outcome.ok and sp.outcome.ok
    assert float(rb.norm() / fb.norm()) <= 0.005
    assert bool((rp.norm(dim=1) <= 0.005 * fp.norm(dim=1)).all())
    assert sp.nfe_forward >= sb.nfe_forward
    assert mnist.parse_config(["--model", "deq"]).steady_state_test == "batch"
    assert mnist.parse_config(["--model", "deq", "--steady-state-test", "per_sample"]).steady_state_test == "per_sample"
    assert mnist.parse_config(["--model", "deq", "--solver", "newton"]).steady_state_test is None
    with pytest.raises(SystemExit):
        mnist.parse_config(["--model", "deq", "--solver", "newton", "--steady-state-test", "batch"])
