"""Hessian and Fisher influence of a small MLP on Adult, against pyDVL's ``DirectInfluence``.

A skorch ``NeuralNetClassifier`` (87 → 32 → 2, tanh, cross-entropy, no weight decay) is
trained on ``--n-train`` rows of the Adult train split. On that same trained model the script
times, in one process:

* ``HessianInfluence(net, prefit=True, damping=d).fit(X, y)`` + ``attribute`` of
  ``--n-test`` test points (the (n_test, n_train) influence matrix),
* ``FisherInfluence`` (exact Gauss–Newton) likewise,
* pyDVL ``DirectInfluence(model, loss, regularization=d)`` (exact Hessian) ``fit`` +
  ``influences`` (mode "up", same damping), when pyDVL is installed,

and prints the median times, the ratios and the correlation of the influence matrices
(both are ``∇ℓ_testᵀ (H + d I)⁻¹ ∇ℓ_i`` up to sign and the 1/n of the mean loss). With
``--full`` it also times Fisher influence on the whole 30,162-row train split.

pyDVL is a benchmark-only dependency (``pip install --no-deps "pydvl==0.10.*"``); its
imports of dask / distributed / zarr / deprecate are not used by ``DirectInfluence`` and
are stubbed here when missing.

Run: ``python benchmarks/torch_influence.py [--threads 2] [--repeats 3] [--full]``
"""

import argparse
import sys
import time
import warnings
from unittest import mock

import numpy as np
import torch
from skorch import NeuralNetClassifier
from threadpoolctl import threadpool_info, threadpool_limits

from skinfluence import FisherInfluence, HessianInfluence
from skinfluence.datasets import adult_design
from _timing import median_time  # noqa: E402  (benchmarks/_timing.py)


class MLP(torch.nn.Module):
    def __init__(self, d=87, h=32):
        super().__init__()
        self.hidden, self.out = torch.nn.Linear(d, h), torch.nn.Linear(h, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


def _pydvl():
    for name in ("dask", "dask.array", "distributed", "zarr", "zarr.storage", "deprecate"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = mock.MagicMock(name=name)
    try:
        from pydvl.influence.torch import DirectInfluence
    except ImportError:
        return None
    return DirectInfluence


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--damping", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="also time Fisher influence on all 30,162 rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    with threadpool_limits(args.threads):
        print(f"threads: torch={torch.get_num_threads()}, BLAS="
              f"{[(i['internal_api'], i['num_threads']) for i in threadpool_info()]}")
        train, test = adult_design(), adult_design(subset="test")
        rng = np.random.default_rng(0)
        itr = rng.choice(len(train.y), args.n_train, replace=False)
        ite = rng.choice(len(test.y), args.n_test, replace=False)
        X, y = train.X[itr].astype(np.float32), train.y[itr].astype(np.int64)
        Xt, yt = test.X[ite].astype(np.float32), test.y[ite].astype(np.int64)
        torch.manual_seed(0)
        net = NeuralNetClassifier(MLP, criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam,
                                  lr=3e-3, max_epochs=40, batch_size=256, train_split=None, verbose=0)
        t = time.perf_counter()
        net.fit(X, y)
        print(f"trained MLP 87-32-2 on n={len(y)}: {time.perf_counter() - t:.1f} s, "
              f"train acc {np.mean(net.predict(X) == y):.3f}, test acc {np.mean(net.predict(Xt) == yt):.3f}")
        net.module_.double()                        # both libraries work in float64
        X64, Xt64 = X.astype(np.float64), Xt.astype(np.float64)
        p = sum(q.numel() for q in net.module_.parameters())
        print(f"p = {p} parameters, damping = {args.damping}, test points = {len(yt)}")

        res = {}
        for name, cls in (("hessian", HessianInfluence), ("fisher", FisherInfluence)):
            est = cls(net, prefit=True, damping=args.damping)
            res[name] = median_time(lambda: est.fit(X64, y).attribute(Xt64, yt), args.repeats)
            print(f"skinfluence {name:8s} fit+attribute: {res[name][0]:7.2f} s  (solver={est.solver_})")

        Direct = _pydvl()
        if Direct is None:
            print("pyDVL not installed: no comparison")
        else:
            from torch.utils.data import DataLoader, TensorDataset

            # pyDVL's GAUSS_NEWTON mode is the empirical Fisher (and divides by the number of
            # points after the first batch), so both skinfluence timings are compared with
            # pyDVL's exact-Hessian Direct influence.
            loss = torch.nn.functional.cross_entropy
            data = DataLoader(TensorDataset(torch.from_numpy(X64), torch.from_numpy(y)), batch_size=len(y))
            x_t, y_t = torch.from_numpy(X64), torch.from_numpy(y)

            def run():
                model = Direct(net.module_, loss, regularization=args.damping)
                return model.fit(data).influences(torch.from_numpy(Xt64), torch.from_numpy(yt), x_t, y_t)

            t_ref, ref = median_time(lambda: run().detach().numpy(), args.repeats)
            print(f"pyDVL DirectInfluence (Hessian) fit+influences: {t_ref:7.2f} s")
            for name, (t_ski, A) in res.items():
                corr = abs(np.corrcoef(A.ravel(), ref.ravel())[0, 1])
                print(f"  {name:8s}: pyDVL / skinfluence time = x{t_ref / t_ski:.2f}, "
                      f"|corr| of influence matrices with pyDVL's {corr:.6f}")

        if args.full:
            Xf, yf = train.X.astype(np.float64), train.y.astype(np.int64)
            netf = NeuralNetClassifier(MLP, criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam,
                                       lr=3e-3, max_epochs=10, batch_size=256, train_split=None, verbose=0)
            netf.fit(Xf.astype(np.float32), yf)
            est = FisherInfluence(netf, prefit=True, damping=args.damping)
            t_full, _ = median_time(lambda: est.fit(Xf, yf).attribute(Xt64, yt), 1)
            print(f"skinfluence fisher on the full train split (n={len(yf)}): fit+attribute {t_full:.1f} s")


if __name__ == "__main__":
    main()
