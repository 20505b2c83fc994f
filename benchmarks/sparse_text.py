"""p ≫ n: leave-one-out of TF-IDF logistic regression through the dual (n × n) solver.

A seeded synthetic corpus stands in for real text (no downloads): documents of Poisson
length drawn from a Zipf vocabulary, 8% of each document's words from 300 topic words of
its class, 10% of the labels flipped, vectorised by scikit-learn's ``TfidfVectorizer``
(unigrams and bigrams, the ``p`` most frequent kept). For n = 500 and 2,000 documents and
p = 12,612 and 100,000 features it prints:

* time of ``FisherInfluence(LogisticRegression()).fit(X, y)`` + ``approx_loocv()`` as a
  ratio to one plain ``LogisticRegression().fit(X, y)`` (medians of ``--repeats``, taken in
  turn), and the solver ``solver="auto"`` chose;
* peak memory of that job: the ``tracemalloc`` peak (numpy and scipy allocations) in this
  process; and, in a fresh subprocess that loads the cached corpus and runs the job once,
  the resident set before the job and its peak during it (``VmHWM`` reset after loading,
  Linux), next to that process's ``ru_maxrss`` (interpreter, imports and corpus included);
* with a tightly fitted model (``tol=1e-10``): max |ΔP| of the approximate leave-one-out
  probability against exact refits of ``--n-exact`` rows, and, where the dense curvature
  fits (n = 500, p = 12,612, cached), the same for ``solver="dense"`` and the largest
  difference between the dual and dense leave-one-out probabilities.

Run: ``python benchmarks/sparse_text.py [--repeats 3] [--n-exact 20] [--threads 1]``;
``--pre-change PATH`` times ``fit`` once with the package at ``PATH`` (a checkout from
before the dual solver) on n = 500, p = 12,612, in a subprocess.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from skinfluence import FisherInfluence, InfluenceWarning, set_threads
from skinfluence.refit import exact_loo_predictions

from _common import cache_folder, cached, interleaved_times, pinned_threads

CASES = [(500, 12_612), (500, 100_000), (2_000, 12_612), (2_000, 100_000)]


def make_text_corpus(n_docs, n_features, *, vocabulary=200_000, doc_length=120, topic_share=0.08,
                     n_topic_words=300, label_noise=0.1, random_state=0):
    """A seeded two-class TF-IDF corpus: ``(X, y)`` with ``X`` csr of shape (n_docs, n_features).

    Words are ranks of a Zipf law (exponent 1.05) over ``vocabulary`` words; a share
    ``topic_share`` of each document's words comes from its class's ``n_topic_words``
    topic words; ``label_noise`` of the labels are flipped. Unigrams and bigrams, the
    ``n_features`` most frequent kept, TF-IDF weighted and l2-normalised.
    """
    rng = np.random.default_rng(random_state)
    y = rng.permutation(np.arange(n_docs) % 2)
    probs = np.arange(1, vocabulary + 1, dtype=float) ** -1.05
    probs /= probs.sum()
    topics = rng.choice(np.arange(500, vocabulary), size=(2, n_topic_words), replace=False)
    lengths = rng.poisson(doc_length, n_docs) + 5
    words = rng.choice(vocabulary, size=lengths.sum(), p=probs)
    doc = np.repeat(np.arange(n_docs), lengths)
    topical = rng.random(len(words)) < topic_share
    words[topical] = topics[y[doc[topical]], rng.integers(n_topic_words, size=topical.sum())]
    tokens = np.char.add("w", words.astype(str))
    docs = [" ".join(t) for t in np.split(tokens, np.cumsum(lengths)[:-1])]
    y = np.where(rng.random(n_docs) < label_noise, 1 - y, y)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), max_features=n_features, token_pattern=r"\S+")
    return vectorizer.fit_transform(docs).tocsr(), y


def corpus(n, p):
    """The corpus of a case, cached under ``benchmarks/.cache/sparse_text/``."""
    path = cache_folder("sparse_text") / f"corpus_{n}_{p}.npz"
    if not path.exists():
        X, y = make_text_corpus(n, p)
        sp.save_npz(path.with_suffix(".X.npz"), X)
        np.savez(path, y=y)
    return sp.load_npz(path.with_suffix(".X.npz")).tocsr(), np.load(path)["y"]


def job(X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InfluenceWarning)   # default tol: the check warns
        inf = FisherInfluence(LogisticRegression()).fit(X, y)
    return inf, inf.approx_loocv(response_method="predict_proba")


def _status(key):
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status``, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_case(n, p, threads):
    """Child process: resident memory around one job, MiB. The peak (``VmHWM``) is reset
    after loading the corpus (``/proc/self/clear_refs``), so that it is the job's own;
    ``ru_maxrss`` covers the whole process."""
    set_threads(threads)
    X, y = corpus(n, p)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    job(X, y)
    peak = _status("VmHWM")
    print(json.dumps({"before": before, "peak": peak,
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def child(args, *extra, path=None):
    env = {**os.environ, **{f"{lib}_NUM_THREADS": str(args.threads) for lib in ("OMP", "OPENBLAS", "MKL")}}
    if path is not None:
        env["PYTHONPATH"] = f"{path}{os.pathsep}{Path(__file__).parent}"
    out = subprocess.run([sys.executable, __file__, *extra, "--threads", str(args.threads)], env=env,
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def tight():
    return LogisticRegression(tol=1e-10, max_iter=100_000)


def dense_reference(X, y, rows):
    """LOO probabilities and exact-refit errors of solver='dense' on the tight model (cached)."""
    def compute():
        t = time.perf_counter()
        inf = FisherInfluence(tight(), solver="dense").fit(X, y)
        return {"loo": inf.approx_loocv(response_method="predict_proba"), "seconds": time.perf_counter() - t}

    return cached("sparse_text_dense", compute, *X.shape)


def case(n, p, args, rss):
    X, y = corpus(n, p)
    plain = lambda: LogisticRegression().fit(X, y)  # noqa: E731
    (t_plain, t_job), (_, (inf, _)) = interleaved_times([plain, lambda: job(X, y)], args.repeats)
    tracemalloc.start()
    job(X, y)
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    # accuracy: the tightly fitted model, dual against exact refits (and dense where it fits)
    rng = np.random.default_rng(0)
    rows = rng.choice(n, size=args.n_exact, replace=False)
    fine = FisherInfluence(tight()).fit(X, y)
    loo = fine.approx_loocv(response_method="predict_proba")
    exact = exact_loo_predictions(fine.estimator_, X, y, rows, "predict_proba")
    change = np.abs(fine.estimator_.predict_proba(X[rows]) - exact).max()
    row = dict(n=n, p=p, nnz=X.nnz, solver=inf.solver_, plain=t_plain, job=t_job,
               traced=traced, **rss,
               err_dual=np.abs(loo[rows] - exact).max(), loo_change=change)
    if (n, p) == (500, 12_612) and not args.no_dense:
        ref = dense_reference(X, y, rows)
        row.update(err_dense=np.abs(ref["loo"][rows] - exact).max(),
                   dual_vs_dense=np.abs(loo - ref["loo"]).max(),
                   dense_seconds=float(ref["seconds"]))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-exact", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-dense", action="store_true",
                        help="skip the dense reference (minutes, gigabytes)")
    parser.add_argument("--pre-change", metavar="PATH",
                        help="a checkout from before the dual solver")
    parser.add_argument("--rss-case", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fit-once", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_case:
        return rss_case(*args.rss_case, args.threads)
    if args.fit_once:  # the pre-change timing, run with another checkout on the path
        X, y = corpus(*args.fit_once)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import skinfluence
            FisherInfluence(LogisticRegression()).fit(X, y)
        print(json.dumps({"fit": time.perf_counter() - t, "package": skinfluence.__file__,
                          "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    with pinned_threads(args.threads, f"medians of {args.repeats}; exact refits of {args.n_exact} rows (tol=1e-10)"):
        # memory first, in fresh subprocesses forked while this process is still small
        rss = [child(args, "--rss-case", str(n), str(p)) for n, p in CASES]
        rows = [case(n, p, args, r) for (n, p), r in zip(CASES, rss)]
    print("\n| n | p | nnz | solver | plain fit (s) | fit + approx_loocv (s) | ratio | "
          "tracemalloc peak (MiB) | RSS before → peak (MiB) | ru_maxrss (MiB) | "
          "max abs ΔP vs refit | max abs LOO change |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['p']} | {r['nnz']} | {r['solver']} | {r['plain']:.3f} | "
              f"{r['job']:.3f} | {r['job'] / r['plain']:.1f} | {r['traced']:.0f} | "
              f"{r['before']:.0f} → {r['peak']:.0f} | {r['maxrss']:.0f} | {r['err_dual']:.2e} | "
              f"{r['loo_change']:.2e} |")
    for r in rows:
        if "err_dense" in r:
            print(f"\nn={r['n']}, p={r['p']}, solver='dense' (tight model, "
                  f"{r['dense_seconds']:.0f} s, cached): max abs ΔP vs refit {r['err_dense']:.2e} (dual {r['err_dual']:.2e}); "
                  f"max abs LOO probability, dual − dense: {r['dual_vs_dense']:.1e}")
    if args.pre_change:
        pre = child(args, "--fit-once", "500", "12612", path=args.pre_change)
        print(f"\npre-change ({pre['package']}): FisherInfluence(LogisticRegression()).fit "
              f"on n=500, p=12612: {pre['fit']:.1f} s, ru_maxrss {pre['maxrss']:.0f} MiB")


if __name__ == "__main__":
    main()
