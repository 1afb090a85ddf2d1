"""Reference Fréchet distances for test/eval_classifier.test.ts, computed by
numpy and scipy, not by this project.

Not run by CI: run once, by hand, with numpy and scipy (written with numpy
2.x, scipy 1.x; the versions used are recorded in the output):

    python tools/make_frechet_fixture.py test/fixtures/frechet/cases.json

Each case is two small seeded feature sets (rows) and the distance the
pytorch-fid formula gives them:

    |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(scipy.linalg.sqrtm(S1 @ S2))

with S the numpy.cov (n - 1) covariances. The sets are correlated,
anisotropic Gaussians (and one of ReLU-like features, half of them zero) so
that the matrix square root is not trivial. Features are rounded to 4
decimals before anything is computed, and the distances are written
repr-exact, so the test reads the very numbers scipy saw.
"""
import json
import sys

import numpy as np
import scipy
import scipy.linalg


def frechet(x: np.ndarray, y: np.ndarray) -> float:
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def correlated(rng: np.random.Generator, n: int, d: int, shift: float, scale: float) -> np.ndarray:
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    # rounded to 4 decimals: a short fixture, and the numbers scipy saw are exactly those in it
    return np.round(shift + scale * rng.normal(size=(n, d)) @ mix + 0.1 * rng.normal(size=(n, d)), 4)


def main(out: str) -> None:
    rng = np.random.default_rng(24)
    cases = []
    specs = [
        ("small, shifted", 40, 5, 0.5, 1.0),
        ("wider, rescaled", 120, 12, 0.0, 2.0),
        ("64-d features, 100 vectors", 100, 64, 0.1, 1.0),
    ]
    for name, n, d, shift, scale in specs:
        x = correlated(rng, n, d, 0.0, 1.0)
        y = correlated(rng, n + 7, d, shift, scale)  # unequal sizes on purpose
        cases.append({"name": name, "d": d, "x": x.ravel().tolist(), "y": y.ravel().tolist(), "fd": frechet(x, y)})
    # ReLU-like features: non-negative, many exact zeros (as the classifier's are)
    x = np.maximum(0, correlated(rng, 200, 16, 0.2, 1.0))
    y = np.maximum(0, correlated(rng, 200, 16, 0.0, 1.3))
    cases.append({"name": "ReLU features", "d": 16, "x": x.ravel().tolist(), "y": y.ravel().tolist(), "fd": frechet(x, y)})
    with open(out, "w") as f:
        json.dump({"numpy": np.__version__, "scipy": scipy.__version__, "cases": cases}, f)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
