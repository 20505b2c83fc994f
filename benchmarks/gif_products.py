"""GIF's LiSSA with the dense curvature's products against matrix-free ones, on attribution.

``GeneralizedInfluence(method="lissa").attribute`` solves one least-squares problem per test
point; with many test points LiSSA's ``2 · max_iter`` curvature products per column cost
more than building the dense curvature once, so the solver multiplies by the dense matrix
then (``skinfluence.curvature.gif.DENSE_PRODUCTS_BYTES`` bounds its size). Same iterates,
so the scores must agree to rounding; this prints both times (interleaved medians) and
their ratio.

Data: scikit-learn's digits (pixels / 16, the stratified 80/20 split of
``attribution_quality.py``), ``--n-test`` test points, multinomial
``LogisticRegression(C=1)`` (650 parameters) and, with ``--mlp``, a 64-32-10 tanh MLP
(2,410 parameters) trained by L-BFGS. Threads pinned to ``--threads``.

Run: ``python benchmarks/gif_products.py [--mlp]``.
"""

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression

import skinfluence.curvature.gif as gif
from skinfluence import GeneralizedInfluence
from skinfluence.models.torch import TorchModel

from _common import WD, digits_mlp, digits_split, interleaved_times, pinned_threads, trained_net


def mlp(X, y):
    """A 64-32-10 tanh net trained to its optimum by full-batch L-BFGS (cached)."""
    net, _ = trained_net("gif_products_mlp", lambda: digits_mlp((32,), seed=0), X, y, max_iter=3000)
    return TorchModel(net, loss="cross_entropy", weight_decay=WD)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--ratio", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mlp", action="store_true", help="also the MLP (matrix-free: minutes)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    with pinned_threads(args.threads):
        X, y, Xt, yt = digits_split()
        Xt, yt = Xt[:args.n_test], yt[:args.n_test]
        models = {"logistic regression": (LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000), {})}
        if args.mlp:
            models["MLP 64-32-10"] = (mlp(X, y), dict(prefit=True))
        default_limit = gif.DENSE_PRODUCTS_BYTES

        def attribute(est, opts, limit):
            gif.DENSE_PRODUCTS_BYTES = limit
            try:
                inf = GeneralizedInfluence(est, ratio=args.ratio, damping="auto", random_state=0, **opts)
                return inf.fit(X, y).attribute(Xt, yt)
            finally:
                gif.DENSE_PRODUCTS_BYTES = default_limit

        print(f"| model | p | LiSSA products | time (s, median of {args.repeats}) | ratio | "
              "max |difference| / max |score| |")
        print("|---|---|---|---|---|---|")
        for name, (est, opts) in models.items():
            p = GeneralizedInfluence(est, **opts).fit(X, y).adapter_.n_params
            (t_dense, t_free), (A_dense, A_free) = interleaved_times(
                [lambda: attribute(est, opts, default_limit), lambda: attribute(est, opts, 0)], args.repeats)
            diff = np.abs(A_dense - A_free).max() / np.abs(A_free).max()
            print(f"| {name} | {p} | dense | {t_dense:.2f} | 1 | {diff:.1e} |")
            print(f"| {name} | {p} | matrix-free | {t_free:.2f} | {t_free / t_dense:.1f} | |", flush=True)


if __name__ == "__main__":
    main()
