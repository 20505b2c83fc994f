"""Attribution quality on digits: LDS and LOO correlation of skinfluence and of peers, on the same models.

Three models on scikit-learn's digits (pixels / 16, fixed stratified 80/20 split,
random_state=0; 1,437 training rows): (a) multinomial ``LogisticRegression(C=1)``,
(b) a skorch MLP 64-64-10 (tanh, 4,810 parameters), (c) the small CNN of
``examples/digits_influence.py`` (1,898 parameters). Both nets are skorch
classifiers trained full batch by L-BFGS in float64 on mean cross-entropy +
``wd/2 ‖θ‖²`` (``wd`` is the SGD optimizer's coupled weight decay, 1e-3), from an
initialisation fixed by ``module__seed``, so that every retrained model starts
from the same weights and differences between models come from their data.

Ground truth (:func:`skinfluence.metrics.retrain_on_subsets`, cached under
``--cache-dir``): ``--n-subsets`` models retrained on random halves of the
training rows (``--cnn-subsets`` for the CNN) and ``--n-loo`` leave-one-out
refits (the first ``--n-loo`` of one fixed permutation of the rows, so that a
shorter run reuses a longer one's refits); test losses on ``--n-test`` test points.

Methods, each on the same trained model (time = fit + attribute, one run):

* skinfluence ``FisherInfluence`` (exact GGN; the MLP also ``fisher="mc"`` and
  ``"empirical"``) and ``HessianInfluence``, over a damping sweep
  ``damping = f · trace(M)/p`` for ``f`` in ``--fractions`` (f = 0 is the default,
  0.1 is ``damping="auto"`` for nets);
* ``GeneralizedInfluence`` (GIF) at the shares of parameters ``--gif-ratios`` (its
  default rule; Hessian and LiSSA, except on the CNN: dense Fisher, exact solve);
* ``FisherInfluence`` with ``curvature_sampler=LogitSampler`` / ``FeatureSampler`` at
  the fractions of rows ``--sampler-sizes`` (``damping="auto"``);
* :class:`skinfluence.ensemble.InfluenceEnsemble`: the Fisher influence averaged over
  ``--fisher-ensemble`` models trained from different initial seeds (nets; training time counted);
* ``--methods kfac`` (``benchmarks/kfac_quality.py``): ``solver="kfac"`` and ``"ekfac"`` over a
  damping sweep on the same factors, ``"ekfac_cg"`` at 5, 10 and 20 iterations, ``"ekfac_lr"`` at
  ranks 16–128, the dense Fisher, TRAK from the store (``InfluenceEnsemble(store={"projection": 512,
  "curvature": "projected"})`` over the TRAK members) and kronfluence's EK-FAC (its defaults,
  ``damping_factor=1e-8``, and its heuristic; and the empirical Fisher in float64), kronfluence
  in the benchmark environment only;
* gradient dot product ``∇ℓ_testᵀ ∇ℓ_i`` (our own baseline, labelled "ours");
* dattri (``pip install --no-deps dattri``, benchmark venv only): TracIn (checkpoints
  along the L-BFGS run), TRAK on its model output ``log(p/(1 − p))`` as dattri's own
  benchmarks define it, with 1 and k models (logistic regression: the model and
  ``--logreg-trak`` − 1 others trained on random halves that are not the LDS subsets;
  nets: ``--n-ensemble`` / ``--cnn-ensemble`` seeds), and IF-CG.

The CNN's Hessian (``--no-hessian`` skips it) is the slow one: one Hessian-vector product
over the 1,437 rows takes ~0.17 s (float64 CNN, one idle CPU thread; two gradients' time), so
the dense Hessian (1,898 of them) takes about 6 minutes.

``--converged`` (nets) asks what influence functions approximate: the change of the optimum.
The seed-0 net is run on by L-BFGS to the optimum of its objective (``--polish-iters``), every
method is computed on that polished net, and the leave-one-out truth is refits warm-started
there and converged (the same ``--n-loo`` rows); the LDS truth is unchanged. Its attributions
are saved under ``attributions/<model>-converged/``.

``--methods`` runs a subset (``fisher``, ``hessian``, ``gif``, ``samplers``, ``baseline``,
``ensemble``, ``peers``); ``--sweep-only`` and ``--peers-only`` are shorthands.

Every attribution is saved under ``<cache-dir>/attributions/<model>/``;
``--part rescore`` scores the saved ones again against the ground truth as it is
then (e.g. after more leave-one-out refits), without recomputing them.

Run (2 shared cores): ``nice -n 5 python benchmarks/attribution_quality.py --n-jobs 2``
(``--part truth`` only trains the ground truth; ``--part cv`` only the Adult CV experiment).
The commands behind ``benchmarks/RESULTS_attribution.md`` are listed there.
"""

import argparse
import os
import re
import time
import warnings

import numpy as np
import scipy.linalg
import torch
import joblib
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils import Bunch
from skorch import NeuralNetClassifier

from skinfluence import FisherInfluence, GeneralizedInfluence, HessianInfluence
from skinfluence.ensemble import InfluenceEnsemble
from skinfluence.sampling import FeatureSampler, LogitSampler
from skinfluence.metrics import linear_datamodeling_score, loo_correlation, retrain_on_subsets
from skinfluence.models.torch import TorchModel

from _common import (CACHE, WD, adult_mlp, adult_sample, digits_cnn, digits_mlp, digits_split, largest_gradient,
                     lbfgs, pinned_threads, trained_net)

METHODS = ("fisher", "hessian", "gif", "samplers", "baseline", "ensemble", "peers", "kfac")
TRAK_HALVES_SEED = 12345  # TRAK's half-subsets (logreg): not the LDS subsets (random_state=0)


# ------------------------------------------------------------------------- models
class LBFGSNet(NeuralNetClassifier):
    """A skorch classifier trained full batch by L-BFGS for ``max_epochs`` iterations (see :func:`lbfgs`).

    ``checkpoints_``: the parameters after 1/8, 1/4 and 1/2 of the iterations (for TracIn).
    """

    def fit(self, X, y, **fit_params):
        self.classes_inferred_ = np.unique(y)
        self.initialize()
        n = self.max_epochs
        self.checkpoints_ = lbfgs(self.module_, X, y, self.optimizer_.param_groups[0]["weight_decay"], n,
                                  checkpoints=_checkpoints(n))
        return self


def make_models():
    net = dict(criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD, optimizer__weight_decay=WD,
               train_split=None, verbose=0, module__seed=0)
    return {
        "logreg": LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000),
        "mlp": LBFGSNet(digits_mlp, max_epochs=1000, **net),
        "cnn": LBFGSNet(digits_cnn, max_epochs=500, **net),
    }


def load_data(n_test):
    X_tr, y_tr, X_te, y_te = digits_split()
    return X_tr, y_tr, X_te[:n_test], y_te[:n_test]


# ------------------------------------------------------------------------- ground truth
def ground_truth(name, est, data, args):
    X, y, Xt, yt = data
    n_subsets = args.cnn_subsets if name == "cnn" else args.n_subsets
    t = time.perf_counter()
    half = retrain_on_subsets(est, X, y, Xt, yt, subsets=n_subsets, random_state=0, n_jobs=args.n_jobs,
                              cache_dir=args.cache_dir)
    loo = None
    if args.n_loo:
        removed = np.random.default_rng(1).permutation(len(y))[:args.n_loo]  # the first k for any --n-loo
        loo = retrain_on_subsets(est, X, y, Xt, yt, subsets=~np.eye(len(y), dtype=bool)[removed],
                                 random_state=0, n_jobs=args.n_jobs, cache_dir=args.cache_dir)
        loo.removed = removed
    print(f"[{name}] ground truth: {n_subsets} half-subset models"
          f"{'' if loo is None else f', {len(loo.removed)} leave-one-out refits'}: "
          f"{time.perf_counter() - t:.0f} s (0 when cached)", flush=True)
    return half, loo


# ------------------------------------------------------------------------- trained models
def _checkpoints(n):
    """TracIn's checkpoints of an ``n``-iteration run: after 1/8, 1/4 and 1/2 of it."""
    return n // 8, n // 4, n // 2


def _train_full(name, est, X, y, seed, args):
    """The net ``est`` trained on all rows from ``module__seed=seed`` (cached): its state dict, its
    checkpoints and its training time."""
    n = est.max_epochs
    module, info = trained_net(f"{name}_seed{seed}", lambda: est.module(seed=seed), X, y, max_iter=n,
                               checkpoints=_checkpoints(n), cache_dir=args.cache_dir)
    return module.state_dict(), info["checkpoints"], info["wall"]


def _converged(name, est, X, y, state, iters, args):
    """The net warm-started from ``state`` and run by L-BFGS until its gradient vanishes (or ``iters``),
    cached by its rows: its state dict and the largest gradient entry of its objective at the end."""
    module, _ = trained_net(f"{name}_converged", lambda: est.module(seed=0), X, y, max_iter=iters, start=state,
                            cache_dir=args.cache_dir)
    return module.state_dict(), largest_gradient(module, X, y)


def polished_state(name, est, X, y, args):
    """The seed-0 net trained as usual, then run on to the optimum of its objective (cached)."""
    return _converged(name, est, X, y, _train_full(name, est, X, y, 0, args)[0], args.polish_iters, args)


def converged_loo(name, est, data, args):
    """Leave-one-out truth at the optimum: each refit warm-started from the polished net and converged.

    What influence functions approximate is the optimum's change when a row is removed; a refit
    from scratch of an unconverged net also changes its optimisation path (training noise)."""
    X, y, Xt, yt = data
    t = time.perf_counter()
    state, g_full = polished_state(name, est, X, y, args)
    removed = np.random.default_rng(1).permutation(len(y))[:args.n_loo]   # the same rows as ground_truth's

    def test_losses(st):
        module = est.module(seed=0)
        module.load_state_dict(st)
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(module(torch.as_tensor(Xt)), torch.as_tensor(yt),
                                                     reduction="none").numpy()

    iters = args.refit_iters or args.polish_iters
    refits = [_converged(name, est, np.delete(X, i, 0), np.delete(y, i), state, iters, args) for i in removed]
    g_max = max(g for _, g in refits)
    loo = Bunch(subset_losses=np.array([test_losses(st) for st, _ in refits]), full_losses=test_losses(state),
                removed=removed)
    moved = np.abs(loo.subset_losses - loo.full_losses).mean()
    print(f"[{name}] converged leave-one-out truth: polished net's largest gradient entry {g_full:.1e}, the "
          f"{len(removed)} warm-started refits' at most {g_max:.1e}; mean |Δℓ| {moved:.1e}; "
          f"{time.perf_counter() - t:.0f} s (0 when cached)", flush=True)
    return loo


def trained_models(name, est, X, y, args):
    """(fitted estimator or module, torch module or None, checkpoints, training times) for seeds 0..k-1."""
    if name == "logreg":  # every seed gives the same model: TRAK's other members see random halves
        halves = np.random.default_rng(TRAK_HALVES_SEED)
        rows = [np.arange(len(y))] + [np.sort(halves.choice(len(y), len(y) // 2, replace=False))
                                      for _ in range(args.logreg_trak - 1)]
        fits, modules, times = [], [], []
        for r in rows:
            t = time.perf_counter()
            fits.append(clone(est).fit(X[r], y[r]))
            lin = torch.nn.Linear(64, 10).double()
            with torch.no_grad():
                lin.weight.copy_(torch.as_tensor(fits[-1].coef_))
                lin.bias.copy_(torch.as_tensor(fits[-1].intercept_))
            modules.append(lin)
            times.append(time.perf_counter() - t)
        return fits[:1], modules, [[m.state_dict()] for m in modules], times
    n_models = args.cnn_ensemble if name == "cnn" else args.n_ensemble
    out = [_train_full(name, est, X, y, seed, args) for seed in range(n_models)]
    if args.converged:  # every method on the polished seed-0 net
        out[0] = (polished_state(name, est, X, y, args)[0], *out[0][1:])
    modules = []
    for state, _, _ in out:
        module = est.module(seed=0)
        module.load_state_dict(state)
        modules.append(module)
    return ([TorchModel(m, loss="cross_entropy", weight_decay=WD) for m in modules], modules,
            [[*ck, st] for st, ck, _ in out], [t for _, _, t in out])


def probabilities(model, X):
    if isinstance(model, TorchModel):
        with torch.no_grad():
            return torch.softmax(model(torch.as_tensor(X)), 1).numpy()
    return model.predict_proba(X)


# ------------------------------------------------------------------------- scoring
ORDER = ("Fisher (exact)", "Fisher (mc)", "Fisher (empirical)", "Hessian", "GIF", "Fisher (exact), LogitSampler",
         "Fisher (exact), FeatureSampler", "Fisher (exact), ", "grad-dot", "TracIn", "TRAK-1 ", "TRAK-", "IF-CG")


def table_order(label, setting):
    """Sort key of a row: its method's place in ``ORDER`` (its label, else its longest prefix there), then
    the numbers in its setting (damping, ratio, share of rows)."""
    matches = [prefix for prefix in ORDER if (label + " ").startswith(prefix)]
    rank = ORDER.index(label) if label in ORDER else ORDER.index(max(matches, key=len)) if matches else len(ORDER)
    numbers = [float(v) for v in re.findall(r"\d+(?:\.\d+)?(?:e-?\d+)?", setting)]
    return rank, label, numbers


class Scorer:
    """Scores attributions against the ground truth and keeps each one on disk.

    Each scored attribution is saved under ``<cache>/attributions/<model>/`` with its
    label, setting and time, so that ``--part rescore`` can score it again once more
    ground truth exists (e.g. the leave-one-out refits) without recomputing it.
    """

    def __init__(self, name, half, loo, cache_dir):
        self.half, self.loo = half, loo
        self.dir = os.path.join(cache_dir, "attributions", name)
        os.makedirs(self.dir, exist_ok=True)

    def row(self, label, setting, A, seconds, save=True):
        A = np.asarray(A, dtype=float)
        if save:
            joblib.dump((label, setting, A, seconds), os.path.join(self.dir, joblib.hash((label, setting)) + ".joblib"))
        h, lo = self.half, self.loo
        lds = linear_datamodeling_score(A, h.subset_losses, h.subsets, h.full_losses)
        corr = np.nan if lo is None else loo_correlation(A, lo.subset_losses, lo.removed, lo.full_losses)
        return self._print((label, setting, lds, corr, seconds))

    def failed(self, label, setting, exc, seconds):
        return self._print((label, f"{setting}: {type(exc).__name__}: {str(exc)[:60]}", np.nan, np.nan, seconds))

    def timed(self, label, setting, attribution, extra_time=0.0):
        """The row of ``attribution()`` (an (n_test, n_train) array), timed; a failure is a row that says so."""
        t = time.perf_counter()
        try:
            A = attribution()
        except Exception as exc:
            return self.failed(label, setting, exc, time.perf_counter() - t)
        return self.row(label, setting, A, time.perf_counter() - t + extra_time)

    def saved_rows(self):
        """Every saved attribution scored again, in the tables' order (see :func:`table_order`)."""
        saved = [joblib.load(os.path.join(self.dir, f)) for f in os.listdir(self.dir)]
        return [self.row(*s, save=False) for s in sorted(saved, key=lambda s: table_order(*s[:2]))]

    @staticmethod
    def _print(row):
        print("   ", row, flush=True)
        return row


def influence_sweep(label, make, X, y, Xt, yt, test_grads, scale, fractions, scorer, fitted=None, resolve=True):
    """Rows (label, setting, LDS, LOO, seconds) of one influence estimator over the damping sweep.

    One estimator is fitted (time: fit + attribute): ``fitted`` if given, else the most damped
    one, which is the likeliest to have a positive definite curvature. The other dampings reuse
    its dense curvature ``M = curvature_``: ``∇ℓ_t (M + δI)⁻¹ v_i`` is ``removal_effect`` of
    ``∇ℓ_t (M + δI)⁻¹ (M + δ₀I)``, one extra Cholesky (time: the base fit's + this solve), and a
    damping that leaves ``M + δI`` indefinite is a failed row. ``resolve=False`` (linear models,
    whose factorisation also handles the multinomial's null space) fits every damping.
    """
    rows, (base, t_base) = [], (fitted or (None, 0.0))
    if base is None and resolve:
        t, f = time.perf_counter(), max(fractions)
        try:
            base = make(damping=f * scale).fit(X, y)
        except Exception as exc:
            return [scorer.failed(label, f"damping {f:g}·tr/p", exc, time.perf_counter() - t)]
        t_base = time.perf_counter() - t
    for f in fractions:
        t, setting = time.perf_counter(), f"damping {f:g}·tr/p"
        try:
            if not resolve:
                inf = make(damping=f * scale).fit(X, y)
                rows.append(scorer.row(label, setting, inf.attribute(Xt, yt), time.perf_counter() - t))
                continue
            M = base.curvature_.copy()
            M0 = M.copy()
            M0[np.diag_indices_from(M0)] += base.damping
            M[np.diag_indices_from(M)] += f * scale
            try:
                factor = scipy.linalg.cho_factor(M)
            except np.linalg.LinAlgError:
                lo = scipy.linalg.eigvalsh(M, subset_by_index=[0, 0])[0]
                raise ValueError(f"indefinite: smallest eigenvalue {lo:.2e}") from None
            H = scipy.linalg.cho_solve(factor, test_grads(base).T).T @ M0
            rows.append(scorer.row(label, setting, base.removal_effect(H), time.perf_counter() - t + t_base))
        except Exception as exc:  # an indefinite Hessian without damping: say so in the table
            rows.append(scorer.failed(label, setting, exc, time.perf_counter() - t))
    return rows


def dattri_methods(name, modules, ckpts, t_train, data, scorer, args, only=("tracin", "trak", "if-cg")):
    """TracIn, TRAK and IF-CG from dattri on the same trained models (rows as above; ``only``: a subset)."""
    try:
        from dattri.algorithm.influence_function import IFAttributorCG
        from dattri.algorithm.tracin import TracInAttributor
        from dattri.algorithm.trak import TRAKAttributor
        from dattri.task import AttributionTask
    except ImportError as exc:
        print(f"    dattri not importable ({exc}): peers skipped")
        return []
    from torch.utils.data import DataLoader, TensorDataset

    X, y, Xt, yt = data
    model = modules[0]
    n = len(y)

    def penalty(params):
        if name == "logreg":  # C=1: Σℓ + ‖W‖²/2 = n · (mean ℓ + ‖W‖²/(2n)); bias free
            return sum((p**2).sum() for k, p in params.items() if k.endswith("weight")) / (2 * n)
        return WD / 2 * sum((p**2).sum() for p in params.values())

    def loss_func(params, data):  # the training objective, per sample (or mean over a batch)
        x, label = data
        out = torch.func.functional_call(model, params, x.reshape(-1, 64))
        return torch.nn.functional.cross_entropy(out, label.reshape(-1)) + penalty(params)

    def target_func(params, data):  # test loss, no penalty
        x, label = data
        out = torch.func.functional_call(model, params, x.reshape(-1, 64))
        return torch.nn.functional.cross_entropy(out, label.reshape(-1))

    def correct_prob(params, data):
        return torch.exp(-target_func(params, data))

    def margin(params, data):  # TRAK's model output log(p / (1 − p)) of the true class (as dattri's benchmarks)
        logp = -target_func(params, data)
        return logp - torch.log(-torch.expm1(logp))

    def loader(X_, y_):
        return DataLoader(TensorDataset(torch.as_tensor(X_), torch.as_tensor(y_)), batch_size=256, shuffle=False)

    train, test = loader(X, y), loader(Xt, yt)
    rows = []

    def run(label, setting, fn, extra_time=0.0):
        rows.append(scorer.timed(label, setting, lambda: fn().detach().numpy().T.astype(float), extra_time))

    def if_cg(reg):
        task = AttributionTask(loss_func=loss_func, model=model, checkpoints=ckpts[0][-1], target_func=target_func)
        att = IFAttributorCG(task, max_iter=10, regularization=reg)
        att.cache(train)
        return att.attribute(train, test)

    def tracin():
        task = AttributionTask(loss_func=loss_func, model=model, checkpoints=ckpts[0], target_func=target_func)
        att = TracInAttributor(task, weight_list=torch.ones(len(ckpts[0]), dtype=torch.float64),
                               normalized_grad=False)
        return att.attribute(train, test)

    def trak(k):
        task = AttributionTask(loss_func=margin, model=model, checkpoints=[c[-1] for c in ckpts[:k]])
        att = TRAKAttributor(task, correct_probability_func=correct_prob, device="cpu")
        att.cache(train)
        return att.attribute(test)

    if len(ckpts[0]) > 1 and "tracin" in only:
        run("TracIn (dattri)", f"{len(ckpts[0])} L-BFGS checkpoints", tracin)
    if "trak" in only:
        run("TRAK-1 (dattri)", "proj_dim 512, margin", lambda: trak(1))
    k = len(ckpts)
    if k > 1 and "trak" in only:
        members = (f"the model + {k - 1} trained on other random halves" if name == "logreg"
                   else f"{k} seeds")
        run(f"TRAK-{k} (dattri)", f"proj_dim 512, margin, {members} (+ their training)", lambda: trak(k),
            extra_time=sum(t_train[1:k]))
    for reg in {"logreg": (0.0, 1e-3)}.get(name, (1e-3,)) if "if-cg" in only else ():  # last: slow on the CNN
        run("IF-CG (dattri)", f"max_iter 10, regularization {reg:g}", lambda: if_cg(reg))
    return rows


def run_methods(name, est, data, scorer, args):
    X, y, Xt, yt = data
    fitted, modules, ckpts, t_train = trained_models(name, est, X, y, args)
    methods = args.methods
    if methods == {"peers"}:
        return [(name, *r) for r in dattri_methods(name, modules, ckpts, t_train, data, scorer, args)]
    full_check = -np.log(probabilities(fitted[0], Xt)[np.arange(len(yt)), yt])
    gap = np.abs(full_check - (scorer.loo if args.converged else scorer.half).full_losses).max()
    print(f"[{name}] max |full-model test loss − ground truth's| = {gap:.1e}; "
          f"test accuracy {np.mean(probabilities(fitted[0], Xt).argmax(1) == yt):.3f}", flush=True)
    prefit = name != "logreg"
    opts = dict(prefit=prefit)
    fractions = [float(f) for f in args.fractions.split(",")]
    t = time.perf_counter()
    scale_inf = FisherInfluence(fitted[0] if prefit else est, damping=0.0, **opts).fit(X, y)
    t_scale = time.perf_counter() - t
    scale = float(np.trace(scale_inf.curvature_)) / scale_inf.curvature_.shape[0]
    print(f"[{name}] p = {scale_inf.curvature_.shape[0]}, trace(F)/p = {scale:.3e}", flush=True)
    target = fitted[0] if prefit else est

    def test_grads(inf):  # ∇ℓ of the test points (cross-entropy: ∂ℓ/∂logits = p − onehot)
        G = probabilities(fitted[0], Xt)
        G[np.arange(len(yt)), yt] -= 1.0
        return inf.parameter_gradients(Xt, G)

    rows = []
    flavours = ["exact"] + ([f for f in args.fisher_flavours.split(",") if f and f != "exact"] if prefit else [])
    for flavour in flavours if "fisher" in methods else ():
        rows += influence_sweep(f"Fisher ({flavour})",
                                lambda damping, fl=flavour: FisherInfluence(target, fisher=fl, damping=damping,
                                                                              random_state=0, **opts),
                                X, y, Xt, yt, test_grads, scale, fractions, scorer,
                                fitted=(scale_inf, t_scale) if flavour == "exact" else None,
                                resolve=prefit)
    if "hessian" in methods:
        rows += influence_sweep("Hessian", lambda damping: HessianInfluence(target, damping=damping, **opts),
                                X, y, Xt, yt, test_grads, scale, fractions, scorer, resolve=prefit)

    # GIF: the influence restricted to a share of the parameters (its default rule and ratio). Its
    # default curvature and solver are the Hessian and LiSSA; --gif-curvature / --gif-solver change them
    # (the CNN's default here: the dense Fisher and the exact least squares)
    gif = dict(curvature="fisher", method="exact") if name == "cnn" else dict(curvature="hessian", method="lissa")
    gif.update({k: v for k, v in (("curvature", args.gif_curvature), ("method", args.gif_solver)) if v})
    for ratio in (float(r) for r in args.gif_ratios.split(",") if r and "gif" in methods):
        default = " (default)" if ratio == GeneralizedInfluence(None).ratio else ""
        rows.append(scorer.timed(
            f"GIF ({gif['curvature'].capitalize()}, {'LiSSA' if gif['method'] == 'lissa' else 'exact'})",
            f"ratio {ratio:g}{default}, highest_outputs, damping auto",
            lambda r=ratio: GeneralizedInfluence(target, ratio=r, damping="auto", random_state=0, **gif,
                                                 **opts).fit(X, y).attribute(Xt, yt)))
    # the Fisher built on a sample of the rows (gradients still cover every row)
    for size in (float(s) for s in args.sampler_sizes.split(",") if s and "samplers" in methods):
        for sampler in (LogitSampler, FeatureSampler):
            rows.append(scorer.timed(
                f"Fisher (exact), {sampler.__name__}", f"{size:.0%} of the rows, damping auto",
                lambda s=sampler(n_samples=size, random_state=0): FisherInfluence(
                    target, damping="auto", curvature_sampler=s, random_state=0, **opts).fit(X, y).attribute(Xt, yt)))

    # ours: gradient dot product (no curvature) on the same model
    t = time.perf_counter()
    inf = scale_inf

    def loss_gradients(X_, y_):
        G = probabilities(fitted[0], X_)
        G[np.arange(len(y_)), y_] -= 1.0                     # ∂CE/∂logits
        return inf.parameter_gradients(X_, G)

    if "baseline" in methods:
        A = loss_gradients(Xt, yt) @ loss_gradients(X, y).T
        rows.append(scorer.row("grad-dot (ours, baseline)", "∇ℓ_testᵀ∇ℓ_i", A, time.perf_counter() - t))

    # ensembling: Fisher influence averaged over models trained from different seeds (at the sweep's
    # best damping, or "auto"'s 0.1·tr/p without a sweep)
    if len(fitted) > 1 and "ensemble" in methods:
        swept = [r for r in rows if r[0] == "Fisher (exact)" and np.isfinite(r[2])]
        f_best = float(max(swept, key=lambda r: r[2])[1].split()[1].split("·")[0]) if swept else 0.1
        members = [FisherInfluence(m, damping=f_best * scale, **opts) for m in fitted[:args.fisher_ensemble]]
        rows.append(scorer.timed(f"Fisher (exact), {len(members)}-seed ensemble",
                                 f"damping {f_best:g}·tr/p (+ training)",
                                 lambda: InfluenceEnsemble(members).fit(X, y).attribute(Xt, yt),
                                 extra_time=sum(t_train[1:len(members)])))
    if "peers" in methods:
        rows += dattri_methods(name, modules, ckpts, t_train, data, scorer, args)
    if "kfac" in methods:  # K-FAC, EK-FAC, its refinements, TRAK from the store and kronfluence's EK-FAC
        from kfac_quality import kfac_rows, kronfluence_rows, trak_store_rows

        rows += (kfac_rows(name, target, prefit, data, scorer)
                 + trak_store_rows(name, modules, data, scorer, (512,), t_train)
                 + kronfluence_rows(name, modules[0], data, scorer))
    return [(name, *r) for r in rows]


def markdown(rows, args):
    """The full table, then one line per method: its default setting (the first) and its best by LDS."""
    def fmt(v):
        return "–" if not np.isfinite(v) else f"{v:.3f}"

    lines = ["| model | method | setting | LDS | LOO corr. | time (s) |", "|---|---|---|---|---|---|"]
    lines += [f"| {m} | {meth} | {st} | {fmt(lds)} | {fmt(loo)} | {t:.2f} |" for m, meth, st, lds, loo, t in rows]
    lines += ["", "| model | method | default: LDS / LOO corr. | best by LDS: LDS / LOO corr. (setting) | time (s) |",
              "|---|---|---|---|---|"]
    for key in dict.fromkeys((r[0], r[1]) for r in rows):
        group = [r for r in rows if (r[0], r[1]) == key]
        finite = [r for r in group if np.isfinite(r[3])]
        best = max(finite, key=lambda r: r[3]) if finite else group[0]
        d = group[0]
        lines.append(f"| {key[0]} | {key[1]} | {fmt(d[3])} / {fmt(d[4])} | {fmt(best[3])} / {fmt(best[4])} "
                     f"({best[2]}) | {best[5]:.2f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------- AFIF's CV experiment
def adult_cv_experiment(args):
    """5-fold CV of a skorch two-layer net on Adult: exact refits vs Fisher and Hessian influence.

    Influence approximates each fold's refit *to the optimum* of its objective, so the exact
    reference is each fold's net trained as usual and then polished by Newton steps
    (``FisherInfluence(polish=True)``); plain ``cross_val_score`` (Adam only) is shown too.
    """
    from sklearn.metrics import log_loss
    from sklearn.model_selection import KFold, cross_val_score

    from skinfluence.model_selection import approx_cross_val_score

    X, y, _, _ = adult_sample(args.adult_n)
    X = X.astype(np.float32)
    net = NeuralNetClassifier(adult_mlp, criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=3e-3,
                              optimizer__weight_decay=WD, max_epochs=30, batch_size=128, train_split=None,
                              verbose=0)
    cv = KFold(5, shuffle=True, random_state=0)
    losses = []

    def scorer(est, X_, y_):  # accuracy; the fold's log-loss is kept aside
        proba = est.predict_proba(X_)
        losses.append(log_loss(y_, proba, labels=[0, 1]))
        return float(np.mean(proba.argmax(1) == y_))

    def polished_refits():
        acc = []
        for tr, te in cv.split(X):
            torch.manual_seed(0)
            fold = clone(net).fit(X[tr], y[tr])
            model = FisherInfluence(fold, prefit=True, polish=True).fit(X[tr], y[tr]).estimator_
            acc.append(scorer(model, X[te], y[te]))
        return np.array(acc)

    torch.manual_seed(0)
    full = clone(net).fit(X, y)
    scale_inf = FisherInfluence(full, prefit=True, polish=True).fit(X, y)
    scale = float(np.trace(scale_inf.curvature_)) / scale_inf.curvature_.shape[0]
    print(f"\n== AFIF CV experiment: Adult, n = {len(y)}, skorch 87-16-2 tanh (Adam 30 epochs, weight decay {WD}), "
          f"5-fold CV; p = {scale_inf.curvature_.shape[0]}, tr(F)/p = {scale:.2e} "
          "(F: the polished full model's Fisher)")
    methods = [
        ("exact refits, polished to the optimum (reference)", polished_refits),
        ("exact refits, Adam only (cross_val_score)", lambda: cross_val_score(net, X, y, cv=cv, scoring=scorer)),
    ]
    for label, curv, fractions in (("Fisher", "fisher", (0.0, 0.01)), ("Hessian", "hessian", (0.0, 0.01, 1.0, 10.0))):
        for dmp in (f * scale for f in fractions):
            methods.append((f"{label} influence, damping {dmp / scale:g}·tr(F)/p (approx_cross_val_score)",
                            lambda c=curv, dm=dmp: approx_cross_val_score(net, X, y, cv=cv, scoring=scorer,
                                                                          curvature=c, damping=dm)))
    res = {}
    for label, fn in methods:
        torch.manual_seed(0)
        losses.clear()
        t = time.perf_counter()
        try:
            acc = fn()
            res[label] = (acc, np.array(losses), time.perf_counter() - t, None)
        except Exception as exc:
            res[label] = (None, None, time.perf_counter() - t, f"{type(exc).__name__}: {str(exc)[:150]}")
        print("   ", label, res[label][2], flush=True)
    ref_acc, ref_ll, _, _ = res[methods[0][0]]
    t_fisher = res[methods[2][0]][2]
    print("| method | CV accuracy | max abs. diff. per fold | CV log-loss | max abs. diff. per fold | time (s) | "
          "time / Fisher (damping 0) |")
    print("|---|---|---|---|---|---|---|")
    for label, (acc, ll, dt, err) in res.items():
        if err:
            print(f"| {label} | failed: {err} | | | | {dt:.1f} | {dt / t_fisher:.2f} |")
            continue
        print(f"| {label} | {acc.mean():.4f} | {np.abs(acc - ref_acc).max():.4f} | {ll.mean():.4f} | "
              f"{np.abs(ll - ref_ll).max():.4f} | {dt:.1f} | {dt / t_fisher:.2f} |")
    print("(differences against the polished exact refits; each time includes its fits: one full fit for the "
          "approximations, plus the Newton polish, the curvature and the fold steps)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="logreg,mlp,cnn")
    ap.add_argument("--part", choices=["all", "truth", "attribution", "rescore", "cv"], default="all",
                    help="rescore: score the saved attributions against the ground truth as it is now")
    ap.add_argument("--n-subsets", type=int, default=50)
    ap.add_argument("--cnn-subsets", type=int, default=50)
    ap.add_argument("--n-loo", type=int, default=40)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--n-ensemble", type=int, default=5)
    ap.add_argument("--cnn-ensemble", type=int, default=3)
    ap.add_argument("--fisher-ensemble", type=int, default=3, help="models averaged by InfluenceEnsemble")
    ap.add_argument("--logreg-trak", type=int, default=50,
                    help="TRAK members for the logistic regression: the model + others on random halves")
    ap.add_argument("--fractions", default="0,1e-4,1e-3,1e-2,1e-1")
    ap.add_argument("--gif-ratios", default="0.05,0.3", help="GIF's share of parameters (empty: no GIF)")
    ap.add_argument("--gif-curvature", choices=["hessian", "fisher"], help="GIF's curvature (default: per model)")
    ap.add_argument("--gif-solver", choices=["lissa", "exact"], help="GIF's solver (default: per model)")
    ap.add_argument("--fisher-flavours", default="exact,mc,empirical",
                    help="Fisher flavours swept on the nets (the exact one always)")
    ap.add_argument("--sampler-sizes", default="0.1,0.3", help="curvature rows sampled (empty: no samplers)")
    ap.add_argument("--adult-n", type=int, default=2000)
    ap.add_argument("--methods", default=",".join(METHODS), help=f"a subset of {','.join(METHODS)}")
    ap.add_argument("--no-hessian", action="store_true", help="skip the Hessian (as --methods without it)")
    ap.add_argument("--sweep-only", action="store_true", help="only the damping sweeps (--methods fisher,hessian)")
    ap.add_argument("--peers-only", action="store_true", help="only dattri's methods (--methods peers)")
    ap.add_argument("--converged", action="store_true",
                    help="nets: leave-one-out truth from refits warm-started at the polished optimum, "
                         "and every method on the polished net")
    ap.add_argument("--polish-iters", type=int, default=20000, help="L-BFGS iterations at most (--converged)")
    ap.add_argument("--refit-iters", type=int, help="the same for the refits (default: --polish-iters)")
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=str(CACHE / "attribution"))
    args = ap.parse_args()
    args.methods = ({"peers"} if args.peers_only else {"fisher", "hessian"} if args.sweep_only
                    else set(args.methods.split(",")))
    if args.no_hessian:
        args.methods.discard("hessian")
    if not args.methods <= set(METHODS):
        ap.error(f"--methods: unknown {sorted(args.methods - set(METHODS))}; choose among {','.join(METHODS)}")
    warnings.simplefilter("ignore")
    with pinned_threads(args.threads, f"n_jobs={args.n_jobs}"):
        data = load_data(args.n_test)
        models = make_models()
        rows = []
        for name in args.models.split(","):
            if args.part not in ("all", "truth", "attribution", "rescore"):
                break
            half, loo = ground_truth(name, models[name], data, args)
            if args.converged and name != "logreg":
                loo = converged_loo(name, models[name], data, args)
            if args.part == "truth":
                continue
            scorer = Scorer(name + ("-converged" if args.converged else ""), half, loo, args.cache_dir)
            if args.part == "rescore":
                rows += [(name, *r) for r in scorer.saved_rows()]
            else:
                rows += run_methods(name, models[name], data, scorer, args)
        if rows:
            print("\n" + markdown(rows, args), flush=True)
        if args.part in ("all", "cv"):
            adult_cv_experiment(args)


if __name__ == "__main__":
    main()
