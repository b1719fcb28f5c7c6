"""CIFAR-10 multiscale DEQ ("MDEQ-small", the Skip DEQ paper's tiny config) and its relatives.

Architecture (Bai, Koltun & Kolter 2020, in the configuration the Skip DEQ paper trains):

* stem: conv3x3(3->24)-BN-ReLU-conv3x3(24->24)-BN-ReLU; its output is the injection x of branch 0.
* f(z, x) on two branches, 24 channels at 32x32 and 24 channels at 16x16:
  a residual block per branch (weight-normalised conv3x3 24->120, GN, ReLU, conv3x3 120->24,
  variational dropout, + injection, GN, + z, ReLU, GN), then sum fusion (branch 0 -> 1 by a
  stride-2 conv3x3 + GN, branch 1 -> 0 by conv3x3 + GN + nearest upsampling), then a post-fusion
  ReLU - weight-normalised conv1x1 - GN per branch. GroupNorm uses 8 groups (4 after fusion).
* head: a bottleneck per branch (8 and 16 planes, expansion 4), the 32x32 stream downsampled
  into the 16x16 one and summed, conv1x1 -> 200 channels, BN-ReLU, global pooling, linear -> 10.
* Skip net g(x): one MDEQ residual block (expansion 3) on the injection for branch 0 and a
  stride-2 downsampling block from it for branch 1.

Vanilla: 163,882 parameters; Skip adds 36,672 (the papers' sizes are in train.exp_cifar).
Which solver, tolerances and budgets train it on CIFAR-10 is the experiment's choice, not the
architecture's: see train.exp_cifar.

The DEQ layer works on one tensor per sample, so the two-branch state is flattened and
concatenated into z of shape (batch, 24*32*32 + 24*16*16); :class:`MultiscaleLayout` packs and
unpacks it. The injection travels the same way inside x, together with the dropout masks: a
variational-dropout mask must stay the same for every evaluation of f within one solve, and
carrying it in x keeps f a pure function of (z, x) (no mask stored on the module between calls).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models._base import ZooOutput
from models.mnist_deq import deq_metrics, deq_regularizers

__all__ = [
    "MultiscaleLayout",
    "MDEQStem",
    "MDEQCell",
    "MDEQHead",
    "MDEQSkipNet",
    "ResidualBlock",
    "WNConv2d",
    "MDEQ_SMALL",
    "MDEQConfig",
    "count_parameters",
    "VARIANTS",
    "ODESolve",
    "MDEQClassifier",
]


@dataclass(frozen=True, kw_only=True)
class MDEQConfig:
    """Hyperparameters of the multiscale DEQ (defaults: the papers' CIFAR-10 tiny model)."""

    channels: tuple[int, ...] = (24, 24)
    resolution: int = 32
    expansion: int = 5
    groups: int = 8
    dropout: float = 0.2
    head_channels: tuple[int, ...] = (8, 16)
    final_channels: int = 200
    num_classes: int = 10
    in_channels: int = 3
    skip_expansion: int = 3

    def __post_init__(self):
        if len(self.channels) != 2 or len(self.head_channels) != 2:
            raise ValueError(
                f"channels and head_channels must list 2 branches, got {self.channels} and "
                f"{self.head_channels}; only the two-branch MDEQ-small is implemented"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for c in self.channels:
            if c % self.groups:
                raise ValueError(f"channels {self.channels} must be divisible by groups={self.groups}")
        if self.resolution % 2:
            raise ValueError(f"resolution must be even, got {self.resolution}")


MDEQ_SMALL = MDEQConfig()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class MultiscaleLayout:
    """Shapes (C, H, W) of the branches, and the flat (batch, N) packing the DEQ layer sees."""

    shapes: tuple[tuple[int, int, int], ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(c * h * w for c, h, w in self.shapes)

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def pack(self, tensors) -> torch.Tensor:
        if len(tensors) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} branch tensors, got {len(tensors)}")
        for t, s in zip(tensors, self.shapes):
            if tuple(t.shape[1:]) != s:
                raise ValueError(f"branch tensor must have shape (batch, {s}), got {tuple(t.shape)}")
        return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)

    def unpack(self, flat: torch.Tensor) -> list[torch.Tensor]:
        if flat.dim() != 2 or flat.shape[1] != self.size:
            raise ValueError(f"packed state must have shape (batch, {self.size}), got {tuple(flat.shape)}")
        parts = torch.split(flat, self.sizes, dim=1)
        return [p.reshape(flat.shape[0], *s) for p, s in zip(parts, self.shapes)]


class WNConv2d(nn.Module):
    """Bias-free conv with weight normalisation: weight = g * v / ||v|| per output channel.

    Written out instead of torch's parametrization so f stays a plain function of its
    parameters under forward-mode AD and double backward (the DEQ solvers use both).
    """

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.padding = kernel // 2
        self.v = nn.Parameter(torch.randn(cout, cin, kernel, kernel) * 0.01)
        self.g = nn.Parameter(self.v.detach().flatten(1).norm(dim=1).reshape(cout, 1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.v.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        return F.conv2d(x, self.g * self.v / norm, stride=self.stride, padding=self.padding)


def _conv(cin: int, cout: int, kernel: int, *, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)
    # small normal init, as in the MDEQ reference setup: f starts close to a contraction
    nn.init.normal_(conv.weight, 0.0, 0.01)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


class ResidualBlock(nn.Module):
    """MDEQ residual block: z -> GN(ReLU(z + GN(drop(conv(ReLU(GN(conv(z))))) + injection)))."""

    def __init__(self, channels: int, *, expansion: int, groups: int):
        super().__init__()
        inner = channels * expansion
        self.conv1 = WNConv2d(channels, inner, 3)
        self.gn1 = nn.GroupNorm(groups, inner)
        self.conv2 = WNConv2d(inner, channels, 3)
        self.gn2 = nn.GroupNorm(groups, channels)
        self.gn3 = nn.GroupNorm(groups, channels)

    def forward(self, z, injection=None, mask=None):
        out = self.conv2(F.relu(self.gn1(self.conv1(z))))
        if mask is not None:
            out = out * mask
        if injection is not None:
            out = out + injection
        return self.gn3(F.relu(self.gn2(out) + z))


class _Down(nn.Sequential):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__(_conv(cin, cout, 3, stride=2), nn.GroupNorm(groups, cout))


class _Up(nn.Sequential):
    # conv3x3 as in the Skip DEQ paper's MDEQ (the original MDEQ used conv1x1 here)
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__(_conv(cin, cout, 3), nn.GroupNorm(groups, cout), nn.Upsample(scale_factor=2, mode="nearest"))


class MDEQStem(nn.Sequential):
    """Image -> injection for the 32x32 branch."""

    def __init__(self, config: MDEQConfig = MDEQ_SMALL):
        c = config.channels[0]
        super().__init__(
            _conv(config.in_channels, c, 3), nn.BatchNorm2d(c), nn.ReLU(),
            _conv(c, c, 3), nn.BatchNorm2d(c), nn.ReLU(),
        )


class MDEQCell(nn.Module):
    """The equilibrium function f(z, x) of MDEQ-small on packed tensors.

    z: (batch, layout.size), the two branches flattened. x: (batch, x_layout.size), holding the
    branch-0 injection followed by one dropout mask per branch (all ones in eval mode); build it
    with :meth:`make_input`.
    """

    def __init__(self, config: MDEQConfig = MDEQ_SMALL):
        super().__init__()
        self.config = config
        c0, c1 = config.channels
        r = config.resolution
        self.layout = MultiscaleLayout(((c0, r, r), (c1, r // 2, r // 2)))
        self.x_layout = MultiscaleLayout(((c0, r, r),) + self.layout.shapes)
        g = config.groups
        self.branches = nn.ModuleList(
            ResidualBlock(c, expansion=config.expansion, groups=g) for c in config.channels
        )
        self.down = _Down(c0, c1, g)
        self.up = _Up(c1, c0, g)
        self.post = nn.ModuleList(
            nn.Sequential(nn.ReLU(), WNConv2d(c, c, 1), nn.GroupNorm(g // 2, c)) for c in config.channels
        )

    def make_input(self, injection: torch.Tensor) -> torch.Tensor:
        """Pack the stem output with fresh variational-dropout masks (ones when not training)."""
        b = injection.shape[0]
        p = self.config.dropout
        masks = []
        for shape in self.layout.shapes:
            if self.training and p > 0:
                keep = torch.empty(b, *shape, device=injection.device, dtype=injection.dtype).bernoulli_(1 - p)
                masks.append(keep / (1 - p))
            else:
                masks.append(torch.ones(b, *shape, device=injection.device, dtype=injection.dtype))
        return self.x_layout.pack([injection, *masks])

    def injection(self, x: torch.Tensor) -> torch.Tensor:
        return self.x_layout.unpack(x)[0]

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        z0, z1 = self.layout.unpack(z)
        inj, m0, m1 = self.x_layout.unpack(x)
        y0 = self.branches[0](z0, inj, m0)
        y1 = self.branches[1](z1, None, m1)
        f0 = self.post[0](y0 + self.up(y1))
        f1 = self.post[1](y1 + self.down(y0))
        return self.layout.pack([f0, f1])


class MDEQSkipNet(nn.Module):
    """Explicit predictor g(x) of z* for Skip DEQ: residual block on the injection + downsampling."""

    def __init__(self, cell: MDEQCell):
        super().__init__()
        config = cell.config
        c0, c1 = config.channels
        self.cell_layouts = (cell.layout, cell.x_layout)
        self.block = ResidualBlock(c0, expansion=config.skip_expansion, groups=config.groups)
        self.down = nn.Sequential(_conv(c0, c1, 3, stride=2), nn.GroupNorm(config.groups, c1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layout, x_layout = self.cell_layouts
        inj = x_layout.unpack(x)[0]
        z0 = self.block(inj)
        return layout.pack([z0, self.down(z0)])


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int):
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(
            _conv(cin, planes, 1), nn.BatchNorm2d(planes), nn.ReLU(),
            _conv(planes, planes, 3), nn.BatchNorm2d(planes), nn.ReLU(),
            _conv(planes, cout, 1), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Sequential(_conv(cin, cout, 1), nn.BatchNorm2d(cout)) if cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class MDEQHead(nn.Module):
    """Classification head on the two equilibrium branches (HRNet-style increase/downsample/fuse)."""

    def __init__(self, config: MDEQConfig = MDEQ_SMALL):
        super().__init__()
        (c0, c1), (h0, h1) = config.channels, config.head_channels
        e = _Bottleneck.expansion
        self.incre = nn.ModuleList([_Bottleneck(c0, h0), _Bottleneck(c1, h1)])
        self.down = nn.Sequential(_conv(h0 * e, h1 * e, 3, stride=2, bias=True), nn.BatchNorm2d(h1 * e), nn.ReLU())
        self.final = nn.Sequential(_conv(h1 * e, config.final_channels, 1, bias=True),
                                   nn.BatchNorm2d(config.final_channels), nn.ReLU())
        self.classifier = nn.Linear(config.final_channels, config.num_classes)

    def forward(self, branches) -> torch.Tensor:
        y0, y1 = branches
        y = self.incre[1](y1) + self.down(self.incre[0](y0))
        y = self.final(y)
        return self.classifier(y.mean(dim=(2, 3)))



# --- the whole classifier -----------------------------------------------------------------

VARIANTS = ("deq", "skipdeq", "skipregdeq", "node")


@dataclass(frozen=True, kw_only=True)
class ODESolve:
    """How the ``node`` variant integrates dz/dt = f(z, x) over [0, 1] from z = 0 (Tsit5)."""

    rtol: float
    atol: float
    max_steps: int


class MDEQClassifier(nn.Module):
    """Stem -> implicit layer (DEQ of :class:`MDEQCell`, or a neural ODE of it) -> head.

    ``variant``: ``deq`` starts the solve at z = 0, ``skipdeq`` at the Skip net's prediction
    g(x) (Skip DEQ), ``skipregdeq`` at f(0, x) (Skip DEQ V2), and ``node`` integrates f over
    [0, 1] as in ``node`` (an :class:`ODESolve`). The DEQ variants take a root ``solver`` and a
    ``gradient`` object from ``implicit.deq``; which ones an experiment uses is its own choice
    (``train.exp_cifar`` holds the CIFAR-10 one).

    ``forward(images)`` solves the equilibrium; ``forward(images, unrolled=True)`` instead
    applies f ``pretrain_depth`` times from the variant's starting point with plain backprop
    (the fixed-depth pre-training of MDEQ), reporting the same regularizer names.

    Example::

        from implicit.deq import GMRES, Broyden, ImplicitBackward
        net = MDEQClassifier(variant="skipdeq", solver=Broyden(tol=0.05, max_iter=18),
                             gradient=ImplicitBackward(solver=GMRES(tol=0.05, max_iter=20)))
        out = net(torch.randn(2, 3, 32, 32))   # out.logits: (2, 10); out.stats: the solve's record
    """

    def __init__(self, config: MDEQConfig = MDEQ_SMALL, *, variant: str, solver=None, gradient=None,
                 pretrain_depth: int = 5, node: ODESolve | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if variant == "node" and node is None:
            raise TypeError("variant 'node' needs node=ODESolve(rtol=..., atol=..., max_steps=...)")
        if variant != "node" and (solver is None or gradient is None):
            raise TypeError(f"variant {variant!r} needs a root solver= and a gradient= object from implicit.deq")
        if not (isinstance(pretrain_depth, int) and pretrain_depth >= 1):
            raise ValueError(f"pretrain_depth must be an int >= 1, got {pretrain_depth!r}")
        self.config = config
        self.variant = variant
        self.pretrain_depth = pretrain_depth
        self.node = node
        self.stem = MDEQStem(config)
        self.cell = MDEQCell(config)
        self.head = MDEQHead(config)
        self.skip = MDEQSkipNet(self.cell) if variant == "skipdeq" else None
        # the neural ODE integrates the same f with a closure over x (see _node)
        self.implicit = None if variant == "node" else self._deq(solver, gradient)

    def _deq(self, solver, gradient):
        from implicit.deq import DEQ, SkipInit, SkipRegInit, ZeroInit

        if self.variant == "skipdeq":
            init = SkipInit(self.skip)
        elif self.variant == "skipregdeq":
            init = SkipRegInit()
        else:
            init = ZeroInit()
        # MDEQ trains on a fixed iteration budget (its forward threshold): solves that stop above
        # tol still train
        return DEQ(self.cell, solver=solver, gradient=gradient, init=init, differentiate_failed=True)

    def forward(self, images: torch.Tensor, *, unrolled: bool = False) -> ZooOutput:
        c = self.config
        if images.dim() != 4 or tuple(images.shape[1:]) != (c.in_channels, c.resolution, c.resolution):
            raise ValueError(
                f"images must have shape (batch, {c.in_channels}, {c.resolution}, {c.resolution}), "
                f"got {tuple(images.shape)}"
            )
        x = self.cell.make_input(self.stem(images))
        if unrolled:
            z, regs, nfe, stats, metrics = self._unrolled(x)
        elif self.variant == "node":
            z, stats = self._node(x)
            regs, nfe, metrics = {}, int(stats.nfe_forward), {"steps": float(stats.n_accepted)}
        else:
            z, stats = self.implicit(x, z_shape=(self.cell.layout.size,))
            regs, nfe, metrics = deq_regularizers(stats), int(stats.nfe_forward), deq_metrics(stats)
        logits = self.head(self.cell.layout.unpack(z))
        return ZooOutput(logits=logits, regularizers=regs, nfe_forward=nfe, stats=stats, metrics=metrics)

    def _node(self, x):
        from implicit.ode import Tsit5, odeint

        z0 = x.new_zeros(x.shape[0], self.cell.layout.size)
        t = torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device)
        sol = odeint(lambda t, z: self.cell(z, x), z0, t, solver=Tsit5(), rtol=self.node.rtol,
                     atol=self.node.atol, max_steps=self.node.max_steps, throw=False, record=False)
        return sol.ys[-1], sol.stats

    def _unrolled(self, x):
        depth = self.pretrain_depth
        z0 = None
        if self.skip is not None:
            z0 = self.skip(x)
            z = z0
        else:
            z = x.new_zeros(x.shape[0], self.cell.layout.size)
        fz0 = None
        for k in range(depth):
            z = self.cell(z, x)
            if k == 0:
                fz0 = z
        regs = {}
        if self.variant == "skipdeq":
            regs["skip"] = (z - z0).abs().mean()
        elif self.variant == "skipregdeq":
            regs["skip"] = (z - fz0).abs().mean()
        residual = _relative_residual(self.cell(z, x).detach(), z.detach())
        return z, regs, depth, None, {"residual": residual}


def _relative_residual(fz: torch.Tensor, z: torch.Tensor) -> float:
    num = (fz - z).flatten(1).norm(dim=1)
    den = fz.flatten(1).norm(dim=1).clamp_min(1e-12)
    return float((num / den).max())
