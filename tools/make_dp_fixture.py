#!/usr/bin/env python3
"""Write crates/tunekit/tests/fixtures/dp/opacus_accountants.json: Opacus 1.6's privacy
accountants on a few plans, the reference of tunekit's `dp::accountant` tests.

    pip install 'opacus==1.6.*'
    python3 tools/make_dp_fixture.py

Each `epsilon` case: a history (noise_multiplier, sample_rate, steps) and delta, with the RDP
accountant's epsilon (default orders), its RDP curve at a few orders, and the PRV
accountant's epsilon (eps_error 0.01, the default). Each `sigma` case: Opacus's
get_noise_multiplier for a target epsilon (epsilon_tolerance 0.01) with either accountant.
"""
import json
import os

import opacus
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.utils import get_noise_multiplier

EPSILON_CASES = [
    # (sigma, q, steps, delta)
    (1.0, 0.01, 100, 1e-5),
    (0.8, 0.004, 2500, 1e-5),
    (1.1, 256 / 60000, 2000, 1e-5),
    (2.0, 0.05, 50, 1e-6),
    (0.6, 0.02, 300, 1e-4),
    (4.0, 0.1, 1000, 1e-5),
]
SIGMA_CASES = [
    # (target_eps, delta, q, steps, accountant)
    (8.0, 1e-5, 0.004, 2500, "rdp"),
    (1.0, 1e-5, 0.01, 1000, "rdp"),
    (3.0, 1e-6, 0.05, 200, "rdp"),
    (2.0, 1e-5, 0.01, 500, "prv"),
]
PROBE_ORDERS = [1.5, 2.0, 3.7, 8.0, 32.0, 63.0]


def main():
    cases = []
    for sigma, q, steps, delta in EPSILON_CASES:
        rdp = RDPAccountant()
        rdp.history = [(sigma, q, steps)]
        prv = PRVAccountant()
        prv.history = [(sigma, q, steps)]
        curve = rdp_analysis.compute_rdp(
            q=q, noise_multiplier=sigma, steps=steps, orders=PROBE_ORDERS
        )
        cases.append(
            {
                "noise_multiplier": sigma,
                "sample_rate": q,
                "steps": steps,
                "delta": delta,
                "rdp_epsilon": rdp.get_epsilon(delta=delta),
                "rdp_orders": PROBE_ORDERS,
                "rdp_curve": [float(v) for v in curve],
                "prv_epsilon": float(prv.get_epsilon(delta=delta)),
                "prv_eps_error": 0.01,
            }
        )
    sigmas = []
    for eps, delta, q, steps, acc in SIGMA_CASES:
        sigma = get_noise_multiplier(
            target_epsilon=eps,
            target_delta=delta,
            sample_rate=q,
            steps=steps,
            accountant=acc,
        )
        sigmas.append(
            {
                "target_epsilon": eps,
                "delta": delta,
                "sample_rate": q,
                "steps": steps,
                "accountant": acc,
                "noise_multiplier": float(sigma),
                "epsilon_tolerance": 0.01,
            }
        )
    out = {
        "opacus": opacus.__version__,
        "epsilon": cases,
        "noise_multiplier": sigmas,
    }
    path = os.path.join(
        os.path.dirname(__file__),
        "..",
        "crates/tunekit/tests/fixtures/dp/opacus_accountants.json",
    )
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
