"""Command line: influence functions on a CSV or Parquet table.

::

    skinfluence loocv DATA.csv --target COL [--model logistic] [--out FILE]
    skinfluence attribute TRAIN.csv TEST.csv --target COL
    skinfluence self-influence DATA.csv --target COL [--top 20]
    skinfluence unlearn DATA.csv --target COL --remove 3,17,42
    skinfluence demo

Every verb fits the model on all numeric columns but the target (``--drop`` removes
more), with :class:`~skinfluence.FisherInfluence` (``--curvature hessian`` for
:class:`~skinfluence.HessianInfluence`) and Newton polishing, prints a table or
writes it as CSV (``--out``). Bad input ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = {
    "logistic": ("sklearn.linear_model", "LogisticRegression", {"max_iter": 1000}),
    "linear": ("sklearn.linear_model", "LinearRegression", {}),
    "ridge": ("sklearn.linear_model", "Ridge", {}),
    "lasso": ("sklearn.linear_model", "Lasso", {}),
    "elasticnet": ("sklearn.linear_model", "ElasticNet", {}),
    "poisson": ("sklearn.linear_model", "PoissonRegressor", {}),
    "gamma": ("sklearn.linear_model", "GammaRegressor", {}),
    "tweedie": ("sklearn.linear_model", "TweedieRegressor", {}),
}


class CLIError(Exception):
    """Bad input from the command line: reported as one line, exit status 2."""


# ------------------------------------------------------------------- input
def read_table(path: str) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.csv.gz``, ``.tsv``) or Parquet (``.parquet``, ``.pq``) file."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"no such file: {path}")
    name = p.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(p)
        return pd.read_csv(p, sep="\t" if name.endswith((".tsv", ".tsv.gz")) else ",")
    except ImportError as exc:
        raise CLIError(f"cannot read {path}: {exc}") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise CLIError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def split_features(df: pd.DataFrame, target: str, drop=(), path: str = "the data"):
    """The numeric feature table and the target column of ``df``."""
    missing = [c for c in [target, *drop] if c not in df.columns]
    if missing:
        raise CLIError(f"column {missing[0]!r} is not in {path} (columns: {', '.join(map(str, df.columns))})")
    X = df.drop(columns=[target, *drop])
    if X.shape[1] == 0:
        raise CLIError(f"{path} has no feature columns besides the target {target!r}")
    bad = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]  # bool counts as 0/1
    if bad:
        raise CLIError(f"feature column {bad[0]!r} in {path} is not numeric ({X[bad[0]].dtype}): "
                       f"encode it as numbers or leave it out with --drop {bad[0]}")
    if X.isna().any().any():
        col = X.columns[X.isna().any()][0]
        raise CLIError(f"feature column {col!r} in {path} has missing values: impute them or --drop {col}")
    y = df[target]
    if y.isna().any():
        raise CLIError(f"the target column {target!r} in {path} has missing values")
    return X.astype(float), y.to_numpy()


def make_model(name: str, params=()):
    """A fresh scikit-learn estimator from a ``--model`` name and ``--param KEY=VALUE`` settings."""
    if name not in MODELS:
        raise CLIError(f"unsupported model {name!r}: choose one of {', '.join(MODELS)}")
    module, cls, defaults = MODELS[name]
    est = getattr(__import__(module, fromlist=[cls]), cls)(**defaults)
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise CLIError(f"--param {item!r} is not KEY=VALUE")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # a bare word: keep it as a string
        if key not in est.get_params():
            raise CLIError(f"{cls} has no parameter {key!r}")
        est.set_params(**{key: value})
    return est


# ------------------------------------------------------------------- verbs
def fit_influence(args, X, y):
    """The influence estimator the verbs share, fitted on ``X, y``."""
    from . import FisherInfluence, HessianInfluence

    cls = FisherInfluence if args.curvature == "fisher" else HessianInfluence
    inf = cls(make_model(args.model, args.param), polish=not args.no_polish, damping=args.damping)
    try:
        return inf.fit(X, y)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"cannot fit {args.model} on {args.data}: {str(exc).splitlines()[0]}") from None


def _load(args, path=None):
    path = path or args.data
    return split_features(read_table(path), args.target, args.drop, path)


def loocv(args) -> tuple[pd.DataFrame, str]:
    """Leave-one-out predictions of every row (probabilities for a classifier)."""
    X, y = _load(args)
    inf = fit_influence(args, X, y)
    est = inf.estimator_
    if hasattr(est, "predict_proba"):
        P = inf.approx_loocv(method=args.method, response_method="predict_proba")
        table = pd.DataFrame(P, index=X.index, columns=[f"P({c})" for c in est.classes_])
        pred = est.classes_[P.argmax(axis=1)]
        summary = f"approximate leave-one-out accuracy {np.mean(pred == y):.4f}"
    else:
        p = inf.approx_loocv(method=args.method)
        table = pd.DataFrame({"loo_prediction": p}, index=X.index)
        summary = f"approximate leave-one-out MSE {np.mean((p - y) ** 2):.6g}"
    table.insert(0, args.target, y)
    return table, summary


def attribute(args) -> tuple[pd.DataFrame, str]:
    """``A[j, i]``: test row j's loss after removing training row i, minus now."""
    X, y = _load(args)
    X_test, y_test = _load(args, args.test)
    if list(X_test.columns) != list(X.columns):
        raise CLIError(f"{args.test} must have the same feature columns as {args.data}")
    inf = fit_influence(args, X, y)
    A = inf.attribute(X_test, y_test)
    table = pd.DataFrame(A, index=X_test.index.rename("test_row"), columns=X.index)
    return table, ("A[j, i] = loss of test row j after removing training row i, minus its loss now "
                   "(first order); positive: row i helps test row j")


def self_influence(args) -> tuple[pd.DataFrame, str]:
    """Each training row's own leave-one-out loss increase."""
    X, y = _load(args)
    inf = fit_influence(args, X, y)
    s = pd.Series(inf.self_influence(method=args.method), index=X.index, name="self_influence")
    table = pd.DataFrame({args.target: y, "self_influence": s})
    if args.top:
        table = table.sort_values("self_influence", ascending=False).head(args.top)
    return table, ("self_influence = the row's own loss after leaving it out minus now; "
                   "the largest are the rows the model fits least like the others "
                   "(candidates for mislabelling)")


def _rows(spec: str, n: int) -> np.ndarray:
    try:
        rows = np.array([int(r) for r in spec.replace(",", " ").split()], dtype=int)
    except ValueError:
        raise CLIError(f"--remove takes row numbers such as 3,17,42, not {spec!r}") from None
    if rows.size == 0 or rows.min() < 0 or rows.max() >= n:
        raise CLIError(f"--remove needs row numbers between 0 and {n - 1}")
    return rows


def unlearn(args) -> tuple[pd.DataFrame, str]:
    """Coefficients of the fitted model and of the model without ``--remove`` rows."""
    X, y = _load(args)
    rows = _rows(args.remove, len(y))
    inf = fit_influence(args, X, y)
    try:
        new = inf.unlearn(rows, method=args.method)
    except ValueError as exc:
        raise CLIError(str(exc).splitlines()[0]) from None
    est = inf.estimator_

    def coefficients(model):
        coef = np.atleast_2d(model.coef_)
        intercept = np.broadcast_to(np.atleast_1d(model.intercept_), (coef.shape[0],))
        return np.column_stack([intercept, coef])

    cols = ["intercept", *map(str, X.columns)]
    labels = (["fitted", "unlearned"] if coefficients(est).shape[0] == 1 else
              [f"{kind}[{c}]" for kind in ("fitted", "unlearned") for c in est.classes_])
    table = pd.DataFrame(np.vstack([coefficients(est), coefficients(new)]), index=labels, columns=cols)
    return table, f"coefficients without rows {', '.join(map(str, rows))} (one Newton step, method={args.method!r})"


# ------------------------------------------------------------------- demo
def demo(n_exact: int = 20, seed: int = 0) -> None:
    """Approximate leave-one-out CV of a logistic regression on the bundled Adult data."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from . import FisherInfluence
    from .datasets import adult_design
    from .refit import exact_loo_predictions

    if n_exact < 1:
        raise CLIError("--n-exact must be at least 1 (rows checked against exact refits)")
    d = adult_design()
    X, y = d.X, d.y
    if not 1 <= n_exact <= len(y):
        raise CLIError(f"--n-exact must be between 1 and {len(y)} (rows checked against exact refits)")
    print(f"Adult (Becker & Kohavi 1996, CC BY 4.0): {X.shape[0]} training rows, {X.shape[1]} columns")
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        LogisticRegression(max_iter=1000).fit(X, y)
        t_fit = time.perf_counter() - t
        t = time.perf_counter()
        inf = FisherInfluence(LogisticRegression(max_iter=1000), polish=True).fit(X, y)
        proba = inf.approx_loocv(response_method="predict_proba")[:, 1]
        t_loo = time.perf_counter() - t
        print(f"one plain fit: {t_fit:.2f}s; fit + approximate LOO for all {len(y)} points: "
              f"{t_loo:.2f}s ({t_loo / t_fit:.1f} x one fit; BLAS pinned to 1 thread)")

        idx = np.random.default_rng(seed).choice(len(y), n_exact, replace=False)
        t = time.perf_counter()
        exact = exact_loo_predictions(inf.estimator_, X, y, idx, "predict_proba")[:, 1]
        t_exact = time.perf_counter() - t
    full = inf.estimator_.predict_proba(X[idx])[:, 1]
    print(f"\n{'row':>6} {'y':>2} {'P(y=1) full fit':>16} {'approx LOO':>11} {'exact LOO':>10}")
    for i, f, a, e in zip(idx, full, proba[idx], exact):
        print(f"{i:>6} {y[i]:>2} {f:>16.6f} {a:>11.6f} {e:>10.6f}")

    def logloss(p, yy):
        p = np.clip(p, 1e-15, 1 - 1e-15)
        return float(np.mean(-yy * np.log(p) - (1 - yy) * np.log(1 - p)))

    err = np.abs(proba[idx] - exact)
    print(f"\nmax |approx - exact| on these {n_exact} rows: {err.max():.2e} "
          f"(the LOO change itself: max {np.abs(full - exact).max():.2e})")
    print(f"LOO log-loss on these rows: approx {logloss(proba[idx], y[idx]):.6f}, "
          f"exact {logloss(exact, y[idx]):.6f}")
    print(f"approximate LOO log-loss, all rows: {logloss(proba, y):.5f}; accuracy "
          f"{np.mean((proba > 0.5) == y):.4f}")
    print(f"exact refits took {t_exact / n_exact:.2f}s each: ~{t_exact / n_exact * len(y) / 60:.0f} "
          f"minutes for all rows, {t_exact / n_exact * len(y) / t_loo:.0f} x the approximation")


# ------------------------------------------------------------------- parser
VERBS = {
    "loocv": (loocv, "approximate leave-one-out predictions of every row, from one fit"),
    "attribute": (attribute, "influence of each training row on the loss of each test row"),
    "self-influence": (self_influence, "each row's own leave-one-out loss increase (data cleaning)"),
    "unlearn": (unlearn, "the model's coefficients as if some rows had never been seen"),
}


def _version() -> str:
    from . import __version__

    return __version__


def _damping(value):
    """``--damping``: a non-negative number or ``auto`` (the estimators' ``damping``)."""
    if value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number or 'auto', got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skinfluence",
        description="Influence functions for scikit-learn models on a CSV or Parquet table: "
                    "what does each training row do to the model? Every answer comes from one fit.",
        epilog="Run 'skinfluence VERB --help' for each verb's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    for verb, (_, help_) in VERBS.items():
        p = sub.add_parser(verb, help=help_, description=help_[0].upper() + help_[1:] + ".")
        p.add_argument("data", metavar="DATA", help="training table: .csv, .tsv or .parquet")
        if verb == "attribute":
            p.add_argument("test", metavar="TEST", help="test table with the same columns")
        p.add_argument("--target", required=True, metavar="COL", help="the column to predict")
        p.add_argument("--model", default="logistic", metavar="NAME",
                       help=f"one of {', '.join(MODELS)} (default: logistic, i.e. LogisticRegression)")
        p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                       help="an estimator parameter, e.g. --param C=0.1 or --param alpha=0.01 (repeatable)")
        p.add_argument("--drop", action="append", default=[], metavar="COL",
                       help="a column that is not a feature (repeatable)")
        p.add_argument("--curvature", choices=["fisher", "hessian"], default="fisher",
                       help="Fisher information (AFIF, default) or Hessian of the training objective")
        if verb != "attribute":  # attribution is first order by definition
            p.add_argument("--method", choices=["ns", "ij"], default="ns",
                           help="ns: Newton step with the curvature without the row(s) (default); "
                                "ij: infinitesimal jackknife (the full curvature)")
        p.add_argument("--damping", type=_damping, default=0.0,
                       help="added to the curvature's diagonal when it is singular (default 0); "
                            "'auto' as for the estimators")
        p.add_argument("--no-polish", action="store_true",
                       help="use the fit as it is instead of taking Newton steps to the optimum")
        if verb == "self-influence":
            p.add_argument("--top", type=int, default=0, metavar="K",
                           help="only the K rows with the largest self-influence, largest first")
        if verb == "unlearn":
            p.add_argument("--remove", required=True, metavar="ROWS",
                           help="0-based row numbers to forget, e.g. 3,17,42")
        p.add_argument("--out", metavar="FILE", help="write the table as CSV instead of printing it")
    p = sub.add_parser("demo", help="approximate LOO-CV of a logistic regression on the bundled Adult data",
                       description="Approximate leave-one-out CV of a logistic regression on the bundled "
                                   "Adult data, checked against exact refits of a few rows.")
    p.add_argument("--n-exact", type=int, default=20, help="rows checked against exact refits (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed choosing those rows (default 0)")
    return parser


def main(argv=None) -> int:
    """Entry point of the ``skinfluence`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            demo(args.n_exact, args.seed)
            return 0
        make_model(args.model, args.param)  # a bad model name fails before any data is read
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the solver's tolerance: polishing takes over
            table, note = VERBS[args.command][0](args)
    except CLIError as exc:
        print(f"skinfluence {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        table.to_csv(args.out)
        print(f"wrote {args.out}: {table.shape[0]} rows x {table.shape[1]} columns; {note}")
    else:
        with pd.option_context("display.max_rows", 40, "display.max_columns", 12, "display.width", 120):
            print(table)
        print(note)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
