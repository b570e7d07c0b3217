"""The command-line options of ``qkd-keyserver simulate`` (apart from the simulation, so that
registering the subcommand imports no numpy: a module process stays lean)."""

from __future__ import annotations

import argparse

from keyserver.qkd.physics import LinkParams

PHYSICS_OPTIONS: tuple[tuple[str, str], ...] = (
    ("alpha_db_per_km", "fibre attenuation, dB/km"),
    ("detector_efficiency", "Bob's detection efficiency eta_Bob"),
    ("dark_count", "dark-count probability per pulse Y0"),
    ("misalignment", "misalignment error e_d"),
    ("clock_hz", "pulse rate, Hz"),
    ("qber_abort", "abort threshold on the X-basis signal error rate"),
    ("eps_sec", "secrecy parameter per block"),
    ("eps_cor", "correctness parameter per block"),
)


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = LinkParams()
    parser.add_argument(
        "--distance-km",
        type=float,
        default=defaults.distance_km,
        help=f"fibre length of the link, km (default {defaults.distance_km:g})",
    )
    parser.add_argument("--blocks", type=int, default=1, help="blocks to run (default 1)")
    parser.add_argument(
        "--pulses", type=float, default=0, help="total pulses to send (overrides --blocks)"
    )
    parser.add_argument(
        "--block-pulses",
        type=float,
        default=0,
        help="pulses per block (default: planned for the distance)",
    )
    for name, text in PHYSICS_OPTIONS:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=float,
            default=getattr(defaults, name),
            help=f"{text} (default {getattr(defaults, name)})",
        )
    parser.add_argument("--eve-fraction", type=float, default=0.0, help="intercept-resend fraction")
    parser.add_argument(
        "--concentration",
        choices=("chernoff", "hoeffding"),
        default=defaults.concentration,
        help="finite-key bound on the decoy estimates: chernoff (tighter) or hoeffding "
        f"(default {defaults.concentration})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="reproducible (NOT secret) randomness, for tests and benchmarks",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
