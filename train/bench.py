"""Benchmarks measured in one run: `python -m train.bench {ode,deq,steady,sde,jvp} --out FILE`."""

from __future__ import annotations

import sys

from train import _cli


def main(argv: list[str] | None = None) -> int:
    parser = _cli.ArgumentParser(prog="python -m train.bench", description=__doc__)
    sub = parser.add_subparsers(dest="suite", required=True)
    sub.add_parser("ode", help="neural-ODE block vs torchdiffeq", add_help=False)
    sub.add_parser("deq", help="DEQ blocks vs torchdeq", add_help=False)
    sub.add_parser("steady", help="continuous-DEQ integrators to one steady-state test", add_help=False)
    sub.add_parser("sde", help="adaptive SDE solvers at equal strong error (SOSRI vs step doubling)", add_help=False)
    sub.add_parser("jvp", help="Jacobian-vector products for Newton–Krylov: double backward vs torch.func",
                   add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.suite == "ode":
        from train import _bench_ode as suite
    elif args.suite == "deq":
        from train import _bench_deq as suite
    elif args.suite == "sde":
        from train import _bench_sde as suite
    elif args.suite == "jvp":
        from train import _bench_jvp as suite
    else:
        from train import _bench_steady as suite
    return suite.main(rest)


if __name__ == "__main__":
    sys.exit(main())
