"""Hessian and Fisher influence of a small MLP on Adult, against pyDVL's ``DirectInfluence``.

A skorch ``NeuralNetClassifier`` (87 → 32 → 2, tanh, cross-entropy, no weight decay, 2,882
parameters) is trained on ``--n-train`` rows of the Adult train split. On that same trained
model the script times, in one process (threads pinned, ``--threads``):

* the Hessian's second-derivative term, as computed now (reverse-over-reverse, blocks of
  512 rows × 32 unit vectors) and as before (forward-over-reverse HVPs over blocks of all
  rows × 2²⁴/(64 n) vectors, re-implemented here as the reference): time and max |Δ|;
* ``HessianInfluence(net, prefit=True, damping=d).fit(X, y)`` + ``attribute`` of
  ``--n-test`` test points (the (n_test, n_train) influence matrix), in float64,
* ``FisherInfluence`` (exact Gauss–Newton) likewise,
* pyDVL ``DirectInfluence(model, loss, regularization=d)`` (exact Hessian) ``fit`` +
  ``influences`` (mode "up", same damping) in float32 and in float64,

and prints the median times, the ratios and the correlation of the influence matrices
(both are ``∇ℓ_testᵀ (H + d I)⁻¹ ∇ℓ_i`` up to sign and the 1/n of the mean loss). With
``--cnn`` it also times, for the digits CNN of the attribution benchmark (1,898 parameters,
1,437 training rows), Fisher influence and the Hessian's second-derivative term (now and
before) on 128 of the rows. With ``--full``
it also times Fisher influence on the whole 30,162-row train split.

pyDVL is a benchmark-only dependency (``pip install --no-deps "pydvl==0.10.*"``); its
imports of dask / distributed / zarr / deprecate are not used by ``DirectInfluence`` and
are stubbed here when missing.

Run: ``python benchmarks/torch_influence.py [--threads 1] [--repeats 3] [--cnn] [--full]``
"""

import argparse
import copy
import sys
import time
import warnings
from unittest import mock

import numpy as np
import torch
from skorch import NeuralNetClassifier

from skinfluence import FisherInfluence, HessianInfluence
from skinfluence.datasets import adult_design

from _common import adult_mlp, adult_sample, digits_cnn, median_time, pinned_threads


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


def previous_residual_hessian(ad, Z, R):
    """The second-derivative term as computed before: forward-over-reverse HVPs of
    ``ψ = Σ R_ik η_ik``, vmapped over blocks of all rows (up to 4,096) × 2²⁴/(64·rows) vectors."""
    from torch.func import vmap

    p = ad.n_params
    H = torch.zeros((p, p), dtype=ad.dtype)
    eye = torch.eye(p, dtype=ad.dtype)
    data = ad._chunks(len(Z))
    width = max(1, 2**24 // (64 * max(data[0].stop - data[0].start, 1)))
    for sl in data:
        hvp = vmap(ad._psi_hvp(ad._t(Z[sl]), ad._t(R[sl])))
        for j in range(0, p, width):
            H[j:j + width] += hvp(eye[j:j + width])
    return H


def pydvl_influences(Direct, module, X, y, Xt, yt, damping, dtype):
    """pyDVL ``DirectInfluence`` fit + influences (mode "up") of ``module`` copied to ``dtype``."""
    from torch.utils.data import DataLoader, TensorDataset

    model = copy.deepcopy(module).to(dtype)
    x, t = torch.as_tensor(X, dtype=dtype), torch.as_tensor(y)
    data = DataLoader(TensorDataset(x, t), batch_size=len(y))
    direct = Direct(model, torch.nn.functional.cross_entropy, regularization=damping)
    out = direct.fit(data).influences(torch.as_tensor(Xt, dtype=dtype), torch.as_tensor(yt), x, t)
    return out.detach().double().numpy()


def compare(name, module, net, X, y, Xt, yt, args, Direct):
    """skinfluence float64 Hessian/Fisher vs pyDVL float32/float64 on one trained model."""
    res = {}
    for kind, cls in (("hessian", HessianInfluence), ("fisher", FisherInfluence)):
        est = cls(net, prefit=True, damping=args.damping)
        res[kind] = median_time(lambda: est.fit(X, y).attribute(Xt, yt), args.repeats)
        print(f"skinfluence {kind:8s} float64 fit+attribute: {res[kind][0]:7.2f} s  (solver={est.solver_})")
    if Direct is None:
        print("pyDVL not installed: no comparison")
        return
    for dtype in (torch.float32, torch.float64):
        t_ref, ref = median_time(lambda: pydvl_influences(Direct, module, X, y, Xt, yt, args.damping, dtype),
                                 args.repeats)
        print(f"pyDVL DirectInfluence (Hessian) {str(dtype)[6:]} fit+influences: {t_ref:7.2f} s")
        for kind, (t_ski, A) in res.items():
            corr = abs(np.corrcoef(A.ravel(), ref.ravel())[0, 1])
            print(f"  {name} {kind:8s} float64: pyDVL {str(dtype)[6:]} / skinfluence time = x{t_ref / t_ski:.2f}, "
                  f"|corr| of influence matrices {corr:.6f}")


def residual_term(net, X, y, args):
    """The Hessian's second-derivative term, now vs before, on the same model."""
    inf = FisherInfluence(net, prefit=True, damping=args.damping).fit(X, y)
    ad, model = inf.adapter_, inf.engine_
    R = model.c[:, None] * model.g
    (t_new, H_new), (t_old, H_old) = (median_time(lambda f=f: f(ad, model.Z, R), args.repeats)
                                      for f in (type(ad).residual_hessian, previous_residual_hessian))
    diff = float((H_new - H_old).abs().max() / H_old.abs().max())
    print(f"second-derivative term: now (reverse-over-reverse, 512 rows x 32 vectors) {t_new:.2f} s, "
          f"before (forward-over-reverse, {min(len(y), 4096)} rows x "
          f"{max(1, 2**24 // (64 * min(len(y), 4096)))} vectors) {t_old:.2f} s -> x{t_old / t_new:.2f}; "
          f"max |Δ| / max |H| {diff:.1e}")


def cnn_section(args):
    """The digits CNN of the attribution benchmark: what its dense Hessian costs."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float64)
    X, Xt, y, yt = train_test_split(X, y, train_size=1437, random_state=0)
    torch.manual_seed(0)
    net = NeuralNetClassifier(digits_cnn, module__seed=0, criterion=torch.nn.CrossEntropyLoss,
                              optimizer=torch.optim.Adam, lr=1e-2,
                              max_epochs=30, batch_size=128, train_split=None, verbose=0)
    net.fit(X, y)
    p = sum(q.numel() for q in net.module_.parameters())
    print(f"\n######## digits CNN: p = {p}, n = {len(y)}, test acc {np.mean(net.predict(Xt) == yt):.3f}, "
          f"{args.n_test} test points")
    est = FisherInfluence(net, prefit=True, damping=args.damping)
    t_f, _ = median_time(lambda: est.fit(X, y).attribute(Xt[:args.n_test], yt[:args.n_test]), 1)
    print(f"skinfluence fisher   float64 fit+attribute: {t_f:7.2f} s (the Gauss–Newton part of the Hessian)")
    # the second-derivative term costs p HVPs over all rows, linear in the rows: timed on a
    # subset (the whole term would take many minutes) and scaled up
    sub = 128
    print(f"second-derivative term on {sub} of {len(y)} rows (x{len(y) / sub:.1f} for all):")
    residual_term(net, X[:sub], y[:sub], args)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--damping", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cnn", action="store_true", help="also the digits CNN (1,898 parameters)")
    ap.add_argument("--full", action="store_true", help="also time Fisher influence on all 30,162 rows")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    Direct = _pydvl()
    with pinned_threads(args.threads, f"medians of {args.repeats}"):
        X, y, Xt, yt = adult_sample(args.n_train, args.n_test)
        X, Xt = X.astype(np.float32), Xt.astype(np.float32)
        torch.manual_seed(0)
        net = NeuralNetClassifier(adult_mlp, module__h=32, criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam,
                                  lr=3e-3, max_epochs=40, batch_size=256, train_split=None, verbose=0)
        t = time.perf_counter()
        net.fit(X, y)
        print(f"trained MLP 87-32-2 on n={len(y)}: {time.perf_counter() - t:.1f} s, "
              f"train acc {np.mean(net.predict(X) == y):.3f}, test acc {np.mean(net.predict(Xt) == yt):.3f}")
        X64, Xt64 = X.astype(np.float64), Xt.astype(np.float64)
        p = sum(q.numel() for q in net.module_.parameters())
        print(f"p = {p} parameters, damping = {args.damping}, test points = {len(yt)}")
        residual_term(net, X64, y, args)
        compare("MLP", net.module_, net, X64, y, Xt64, yt, args, Direct)
        if args.cnn:
            cnn_section(args)

        if args.full:
            train = adult_design()
            Xf, yf = train.X.astype(np.float64), train.y.astype(np.int64)
            netf = NeuralNetClassifier(adult_mlp, module__h=32, criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam,
                                       lr=3e-3, max_epochs=10, batch_size=256, train_split=None, verbose=0)
            netf.fit(Xf.astype(np.float32), yf)
            est = FisherInfluence(netf, prefit=True, damping=args.damping)
            t_full, _ = median_time(lambda: est.fit(Xf, yf).attribute(Xt64, yt), 1)
            print(f"skinfluence fisher on the full train split (n={len(yf)}): fit+attribute {t_full:.1f} s")


if __name__ == "__main__":
    main()
