"""VB linear regression with ARD against scikit-learn's ``ARDRegression``: time to fit and agreement, one process.

    python benchmarks/ard_vs_sklearn.py [--quick] [--json FILE]

Data: y = Xw + ε, x ~ N(0, I), 10% of the D weights non-zero (N(0, 1)), ε ~ N(0, 0.5²), seed 0. Sizes (N, D):
(1e5, 100), (1e6, 100), (1e5, 1,000) (``--quick``: (1e5, 100) only). Both estimators with their defaults
(scikit-learn's ``ARDRegression()``: ``max_iter=300``, ``tol=1e-3``; vbayes's ``VBARDRegression()``: one pass for
the model's statistics, then the engine's global step on them, the coordinate ascent between q(w, τ) and q(α)),
wall time of ``fit`` including vbayes's compilation (persistent cache off), and vbayes's second fit in the same
process. Reported: the times and their ratios, the largest coefficient difference, and how many of the truly zero
weights each sets to 0 or leaves below 1e-3.
"""

from __future__ import annotations

import os

os.environ.setdefault("VBAYES_CACHE_DIR", "off")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, markdown_table  # noqa: E402


def data(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = np.zeros(d)
    on = rng.choice(d, max(1, d // 10), replace=False)
    w[on] = rng.standard_normal(on.size)
    return X, X @ w + 0.5 * rng.standard_normal(n), w


def timed(est, X, y):
    t = time.perf_counter()
    est.fit(X, y)
    return time.perf_counter() - t, est


def main() -> None:
    from sklearn.linear_model import ARDRegression

    from vbayes.estimators import VBARDRegression

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / ".cache" / "ard_vs_sklearn.json")
    args = ap.parse_args()
    sizes = [(100_000, 100)] if args.quick else [(100_000, 100), (1_000_000, 100), (100_000, 1_000)]
    results = []
    for n, d in sizes:
        X, y, w = data(n, d)
        t_vb, vb = timed(VBARDRegression(), X, y)
        t_vb2, _ = timed(VBARDRegression(), X, y)
        t_sk, sk = timed(ARDRegression(), X, y)
        zero = w == 0
        row = {
            "N": n,
            "D": d,
            "vbayes_s": t_vb,
            "vbayes_second_s": t_vb2,
            "sklearn_s": t_sk,
            "max_coef_diff": float(np.max(np.abs(vb.coef_ - sk.coef_))),
            "vbayes_pruned": int(np.sum(np.abs(vb.coef_[zero]) < 1e-3)),
            "sklearn_pruned": int(np.sum(np.abs(sk.coef_[zero]) < 1e-3)),
            "zeros": int(zero.sum()),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    rows = [
        [
            f"{r['N']:.0e}",
            r["D"],
            f"{r['vbayes_s']:.2f}",
            f"{r['vbayes_second_s']:.2f}",
            f"{r['sklearn_s']:.2f}",
            f"{r['sklearn_s'] / r['vbayes_s']:.2f}× / {r['sklearn_s'] / r['vbayes_second_s']:.2f}×",
            f"{r['max_coef_diff']:.1e}",
            f"{r['vbayes_pruned']} / {r['sklearn_pruned']} of {r['zeros']}",
        ]
        for r in results
    ]
    print()
    header = [
        "N",
        "D",
        "vbayes first fit s",
        "vbayes second fit s",
        "scikit-learn s",
        "speed-up (first / second)",
        "max |Δcoef|",
        "zero weights < 1e-3 (vbayes / sklearn)",
    ]
    print(markdown_table(header, rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine_info(), "argv": sys.argv, "results": results}, indent=1))


if __name__ == "__main__":
    main()
