"""
Forgetting a digit: generalized influence against its baselines (class removal, F1)
===================================================================================

A small CNN (3,658 parameters) is trained on scikit-learn's digits; every training
image of class 0 is then unlearned by an influence step restricted to a share of the
parameters (GIF, Lyu et al.), by Freezing (``H_JJ⁻¹ g_J``) and Projecting (the full step
indexed to J) on the same parameters, and by the full influence function (the same
truncated solve, and damped, solved by conjugate gradients), each applied by the authors'
line search (normalised steps, best validation F1); every method is a call of the public
estimators (``GeneralizedInfluence(..., strategy=...)``, ``FisherInfluence``). The F1 score
``2(1 − SA)·EA / ((1 − SA) + EA)`` (EA: test accuracy on the other digits, SA: accuracy
on the removed images) is drawn against the share of parameters, with retraining from
scratch as the reference.

The experiment is the class-removal experiment of ``benchmarks/gif_digits.py``: the
results it saved in ``benchmarks/.cache/gif_digits/removal_<model>_seed<k>.json`` are drawn when present
(every seed it ran), otherwise one seed is run here: with the default arguments about
100 s of CPU time on one thread (95–111 s: the two trainings and the seven methods' CPU
times summed from the benchmark's 5 seeds, not timed end to end; before GIF's Lanczos
default a fresh clone took 272 s, 31 minutes of wall time on the 2-core machine shared at a
load of 11–18).
The figure is saved as ``gif_class_removal.png`` (or the path given as first argument).
``--quick`` runs a smoke version instead (the MLP, one share of parameters, short solves;
3 minutes on a shared CPU), which CI runs (``tests/test_examples.py``).
"""

import json
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from skinfluence import set_threads  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gif_digits  # noqa: E402


def main(out="gif_class_removal.png", seeds=1, model="cnn", quick=False):
    """Draw the saved runs, or run ``seeds`` seeds; ``quick``: the MLP, one share, short
    solves and line searches (the smoke run CI makes)."""
    set_threads(1)   # the package's thread policy: one torch and BLAS thread
    # the benchmark's own defaults, so that the two never drift apart
    options = (["--ratios", "0.3", "--base-ratios", "0.3", "--max-iter", "20", "--max-steps", "10",
                "--cg-iter", "20", "--only", "gif:highest_outputs", "freezing", "full", "damped"] if quick
               else ["--ratios", "0.05", "0.1", "0.3", "--base-ratios", "0.1",
                     "--only", "gif:highest_outputs", "freezing", "projecting", "full", "damped"])
    args = gif_digits.parser().parse_args(options)
    model = "mlp" if quick else model
    if quick:   # keep the smoke run's nets and results out of the benchmark's cache
        gif_digits.RESULTS = Path(tempfile.mkdtemp())
    saved = [] if quick else sorted(gif_digits.RESULTS.glob(f"removal_{model}_seed*.json"))
    if saved:
        per_seed = [json.loads(f.read_text()) for f in saved]
    else:
        per_seed = [gif_digits.exp_removal(args, model, s) for s in range(seeds)]
    seeds = len(per_seed)
    rows = [r for rs in per_seed for r in rs]

    def f1(method, rule=None):
        xs = sorted({r["ratio"] for r in rows if r["method"] == method and rule in (None, r["rule"])},
                    key=lambda q: -1 if q == "-" else q)
        ys = [np.mean([r["F1"] for r in rows if r["method"] == method and r["ratio"] == x
                       and rule in (None, r["rule"])]) for x in xs]
        return 100 * np.array([1.0 if x == "-" else x for x in xs], float), ys

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, rule, label in [("gif", "highest_outputs", "GIF (highest outputs)"),
                                ("freezing", None, "Freezing"), ("projecting", None, "Projecting")]:
        if any(r["method"] == method and rule in (None, r["rule"]) for r in rows):
            ax.plot(*f1(method, rule), marker="o", label=label)
    for method, style, label in [("full", "--", "full influence function (truncated)"),
                                 ("damped", "-.", "damped full influence function (CG)"),
                                 ("second_order", (0, (1, 3)), "second-order (Basu et al.)"),
                                 ("retrain", ":", "retrained without the class")]:
        if not any(r["method"] == method for r in rows):
            continue
        ax.axhline(f1(method)[1][0], ls=style, color="k" if method == "retrain" else "grey", label=label)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks([2, 5, 10, 30], ["2%", "5%", "10%", "30%"])
    ax.set_xlabel("share of parameters updated (per layer)")
    ax.set_ylabel("F1 of forgetting class 0")
    ax.set_title(f"Unlearning digit 0 from a {model.upper()} ({seeds} seed{'s' * (seeds > 1)})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"saved {out}")


if __name__ == "__main__":
    argv = sys.argv[1:]
    main(*[a for a in argv if a != "--quick"][:1], quick="--quick" in argv)
