"""What the benchmark scripts share: thread pinning, timing, data splits, networks, trainer, cache.

The scripts run as ``python benchmarks/<script>.py``, so this folder is on ``sys.path`` and
``from _common import ...`` finds this module. It does not import torch itself (the
networks and the trainer import it when called): the scikit-learn benchmarks measure
memory and start-up in processes that must not load it.

* :func:`pinned_threads`: :func:`skinfluence.set_threads` (the package's one thread policy)
  for the script, the setting printed.
* :func:`median_time`, :func:`interleaved_times`: wall-clock medians.
* :func:`digits_split`, :func:`digits_three_way`, :func:`adult_sample`: the data the
  scripts share.
* :func:`digits_mlp`, :func:`digits_cnn`, :func:`adult_mlp`: the networks (tanh, smooth,
  so that L-BFGS reaches the optimum), each built from a seed.
* :func:`lbfgs`, :func:`objective`: full-batch L-BFGS on mean cross-entropy + ``wd/2 ‖θ‖²``;
  :func:`gif_net`: GIF's networks trained by it.
* :func:`cached`, :func:`trained_net`, :func:`cache_folder`: results kept on disk under ``benchmarks/.cache/``
  (ignored by git), in files named by what determines them (the model, its rows, its
  settings). Not joblib's hash of the arguments: a hash of torch tensors differs between
  processes, so a cache keyed by it is never hit again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from functools import partial
from pathlib import Path

import joblib
import numpy as np

CACHE = Path(__file__).parent / ".cache"
WD = 1e-3  # the weight decay of every network here: the objective is mean CE + WD/2 ‖θ‖²


# ----------------------------------------------------------------------- threads and timing
@contextlib.contextmanager
def pinned_threads(n, note=""):
    """The package's thread policy (:func:`skinfluence.set_threads`) at ``n`` threads: torch
    (when the script uses it) and every BLAS pool, joblib workers sharing them; prints the
    setting. The budget is restored on exit."""
    from skinfluence import _parallel, set_threads

    before = _parallel._BUDGET[:]
    setting = set_threads(n)
    print(f"{setting}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}" + (f"; {note}" if note else ""), flush=True)
    try:
        yield
    finally:
        set_threads(before[0] if before else None)


def median_time(fn, repeats):
    """Median wall time of ``repeats`` calls of ``fn`` and the last call's result."""
    (t,), (out,) = interleaved_times([fn], repeats)
    return t, out


def interleaved_times(fns, repeats):
    """Median wall times of the callables in ``fns``, run in turn ``repeats`` times.

    Taking the contenders in turn, rather than each ``repeats`` times in a row, spreads
    a shared machine's slow spells over all of them, so that their ratios stay honest.
    Returns ``(medians, last results)``, both lists in the order of ``fns``.
    """
    times = [[] for _ in fns]
    outs = [None] * len(fns)
    for _ in range(max(int(repeats), 1)):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t)
    return [float(np.median(t)) for t in times], outs


# ------------------------------------------------------------------------------------- data
def _digits(images):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images / 16.0)[:, None] if images else d.data / 16.0
    return X.astype(np.float64), d.target.astype(np.int64)


def digits_split(images=False):
    """scikit-learn's digits (pixels / 16, float64; ``images``: shaped (n, 1, 8, 8)), the
    stratified 80/20 split with ``random_state=0``: ``(X, y, X_test, y_test)`` (1,437 and 360 rows)."""
    from sklearn.model_selection import train_test_split

    X, y = _digits(images)
    X, Xt, y, yt = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    return X, y, Xt, yt


def digits_three_way(seed):
    """Digit images split per ``seed`` into train 60% / validation 20% / test 20% (stratified):
    ``(X, y, X_val, y_val, X_test, y_test)``."""
    from sklearn.model_selection import train_test_split

    X, y = _digits(images=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.4, stratify=y, random_state=seed)
    Xva, Xte, yva, yte = train_test_split(Xte, yte, test_size=0.5, stratify=yte, random_state=seed)
    return Xtr, ytr, Xva, yva, Xte, yte


def adult_sample(n, n_test=0):
    """``n`` rows of Adult's training design and ``n_test`` of its test design, drawn by
    ``numpy.random.default_rng(0)``: ``(X, y, X_test, y_test)`` (float64, int64)."""
    from skinfluence.datasets import adult_design

    train, test = adult_design(), adult_design(subset="test")
    rng = np.random.default_rng(0)
    itr = rng.choice(len(train.y), n, replace=False)
    ite = rng.choice(len(test.y), n_test, replace=False)
    return train.X[itr], train.y[itr].astype(np.int64), test.X[ite], test.y[ite].astype(np.int64)


# --------------------------------------------------------------------------------- networks
@contextlib.contextmanager
def _initialisation(seed):
    """Initialise from ``seed`` without touching torch's global generator (None: from it)."""
    import torch

    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def digits_mlp(hidden=(64,), seed=None):
    """Digits (64 pixels, flat or 8×8) → tanh layers of sizes ``hidden`` → 10 logits, float64.

    ``(64,)``: 4,810 parameters (attribution); ``(32,)``: 2,410; ``(300, 300)``: 112,810 (GIF).
    """
    import torch
    from torch import nn

    sizes = (64, *hidden)
    with _initialisation(seed):
        layers = [nn.Flatten()]
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        net = nn.Sequential(*layers, nn.Linear(sizes[-1], 10))
    return net.to(torch.float64)


def digits_cnn(hidden=(), seed=None):
    """Digits (flat or 8×8) → conv 8 → avg-pool → conv 16 → avg-pool → tanh layers ``hidden`` → 10
    logits, float64: the CNN of ``examples/digits_influence.py`` (``hidden=()``, 1,898 parameters)
    or GIF's (``hidden=(32,)``, 3,658 parameters)."""
    import torch
    from torch import nn

    sizes = (16 * 2 * 2, *hidden)
    with _initialisation(seed):
        layers = [nn.Flatten(), nn.Unflatten(1, (1, 8, 8)),
                  nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
                  nn.Conv2d(8, 16, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten()]
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        net = nn.Sequential(*layers, nn.Linear(sizes[-1], 10))
    return net.to(torch.float64)


def adult_mlp(d=87, h=16, seed=None, dtype=None):
    """Adult's design (``d`` columns) → ``h`` tanh units → 2 logits (float32 unless ``dtype``):
    ``h=16`` is the AFIF paper's classifier, ``h=32`` the torch benchmarks'."""
    from torch import nn

    with _initialisation(seed):
        net = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, 2))
    return net if dtype is None else net.to(dtype)


def gif_nets():
    """GIF's networks (``gif_digits.py``, ``lowrank.py``) by name, each built from ``seed=``."""
    return {"cnn": partial(digits_cnn, hidden=(32,)), "mlp": partial(digits_mlp, hidden=(300, 300))}


def gif_net(kind, X, y, seed, max_iter=400):
    """GIF's network ``kind`` trained by :func:`lbfgs` on ``(X, y)`` from ``seed`` (cached): the net
    and the CPU seconds its training took (``time.process_time``, one thread: robust to the
    other processes of a shared machine)."""
    net, info = trained_net(f"gif_{kind}_seed{seed}", lambda: gif_nets()[kind](seed=seed), X, y, max_iter=max_iter)
    return net, info["cpu"]


# ---------------------------------------------------------------------------------- trainer
def objective(module, X, y, wd=WD):
    """Mean cross-entropy + ``wd/2 ‖θ‖²`` (torch tensors in, a scalar tensor out)."""
    import torch

    loss = torch.nn.functional.cross_entropy(module(X), y)
    return loss + wd / 2 * sum((p ** 2).sum() for p in module.parameters())


def lbfgs(module, X, y, wd=WD, max_iter=400, *, checkpoints=(), tolerance_grad=1e-10, tolerance_change=1e-14):
    """Full-batch L-BFGS (torch's, strong Wolfe line search, 50 pairs) on :func:`objective`, in place.

    The run is split at ``checkpoints`` (iteration counts): each piece is one call of the
    optimiser's ``step`` with ``max_iter`` its length and ``max_eval`` 5/4 of it (torch's
    default), the curvature pairs carried over; a piece stops early once the gradient or the
    change is below the tolerances, and the next piece goes on from there. Returns the
    parameters (state dicts) at the checkpoints.
    """
    import torch

    X, y = torch.as_tensor(X), torch.as_tensor(y)
    opt = torch.optim.LBFGS(module.parameters(), max_iter=1, history_size=50, line_search_fn="strong_wolfe",
                            tolerance_grad=tolerance_grad, tolerance_change=tolerance_change)

    def closure():
        opt.zero_grad()
        loss = objective(module, X, y, wd)
        loss.backward()
        return loss

    saved, done = [], 0
    for stop in sorted({*checkpoints, max_iter}):
        opt.param_groups[0].update(max_iter=stop - done, max_eval=(stop - done) * 5 // 4)
        opt.step(closure)
        done = stop
        if stop in checkpoints:
            saved.append({k: v.detach().clone() for k, v in module.state_dict().items()})
    return saved


def largest_gradient(module, X, y, wd=WD):
    """The largest entry of the gradient of :func:`objective` (how far from its optimum)."""
    import torch

    module.zero_grad()
    objective(module, torch.as_tensor(X), torch.as_tensor(y), wd).backward()
    return max(float(p.grad.abs().max()) for p in module.parameters())


# ------------------------------------------------------------------------------------ cache
def _digest(parts):
    h = hashlib.sha1()
    for part in parts:
        if isinstance(part, np.ndarray):
            part = np.ascontiguousarray(part)
            h.update(f"{part.dtype}{part.shape}".encode() + part.tobytes())
        elif isinstance(part, dict):  # a state dict
            h.update(_digest([np.asarray(v.detach().cpu()) for v in part.values()]).encode())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()[:16]


def cached(name, compute, *key, cache_dir=None, fresh=False):
    """``compute()``, kept in ``<cache_dir>/<name>_<digest of key>.joblib`` (default ``benchmarks/.cache``).

    ``name`` says what it is (a script, a model), ``key`` what determines it: arrays (their
    bytes), state dicts (their values), numbers and strings (their repr). ``fresh``:
    compute again (and overwrite).
    """
    path = (Path(cache_dir) if cache_dir else cache_folder()) / f"{name}_{_digest(key)}.joblib"
    if path.exists() and not fresh:
        return joblib.load(path)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(value, path)
    return value


def cache_folder(name=""):
    """``benchmarks/.cache/<name>``, created, ignored by git: for the files a script hands from
    one of its processes to another (whose memory it measures, so they keep their own formats)."""
    path = CACHE / name
    path.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    return path


def trained_net(name, make, X, y, *, max_iter, wd=WD, start=None, cache_dir=None, **options):
    """The network ``make()`` trained by :func:`lbfgs` on ``(X, y)``, from its own initialisation
    or from the state dict ``start``; cached (see :func:`cached`: ``name`` must say which network
    and which seed ``make`` builds).

    Returns ``(module, info)``: ``info`` holds ``checkpoints`` (see :func:`lbfgs`), ``cpu``
    (process seconds: robust to the other processes of a shared machine) and ``wall`` seconds
    of the training that made the cached network.
    """
    module = make()

    def train():
        if start is not None:
            module.load_state_dict(start)
        t, c = time.perf_counter(), time.process_time()
        checkpoints = lbfgs(module, X, y, wd, max_iter, **options)
        return {"state": {k: v.detach().clone() for k, v in module.state_dict().items()},
                "checkpoints": checkpoints, "cpu": time.process_time() - c, "wall": time.perf_counter() - t}

    info = cached(name, train, np.asarray(X), np.asarray(y), max_iter, wd, start, sorted(options.items()),
                  cache_dir=cache_dir)
    module.load_state_dict(info.pop("state"))
    return module, info
