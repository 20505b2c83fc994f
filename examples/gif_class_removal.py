"""
Forgetting a digit: generalized influence against its baselines (class removal, F1)
===================================================================================

A small CNN (3,658 parameters) is trained on scikit-learn's digits; every training
image of class 0 is then unlearned by an influence step restricted to a share of the
parameters (GIF, Lyu et al.), by Freezing (``H_JJ⁻¹ g_J``) and Projecting (the full step
indexed to J) on the same parameters, and by the full influence function, each applied
by the authors' line search (normalised steps, best validation F1). The F1 score
``2(1 − SA)·EA / ((1 − SA) + EA)`` (EA: test accuracy on the other digits, SA: accuracy
on the removed images) is drawn against the share of parameters, with retraining from
scratch as the reference.

The experiment is the class-removal experiment of ``benchmarks/gif_digits.py``: the
results it saved in ``benchmarks/.cache/gif_digits/removal_<model>_seed<k>.json`` are drawn when present
(every seed it ran), otherwise one seed is run here (about 20 minutes on one CPU core).
The figure is saved as ``gif_class_removal.png`` (or the path given as first argument).
"""

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gif_digits  # noqa: E402


def main(out="gif_class_removal.png", seeds=1, model="cnn"):
    torch.set_num_threads(1)
    args = argparse.Namespace(ratios=[0.02, 0.05, 0.1, 0.3], rules=["highest_outputs", "random"],
                              mlp_rules=["highest_outputs", "random"], max_iter=100, gamma=0.1,
                              max_steps=100, stop_sa=0.0, verbose=False, curvature="hessian", only=None)
    saved = sorted(gif_digits.RESULTS.glob(f"removal_{model}_seed*.json"))
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
                                ("gif", "random", "GIF (random rows)"),
                                ("freezing", None, "Freezing"), ("projecting", None, "Projecting")]:
        ax.plot(*f1(method, rule), marker="o", label=label)
    for method, style, label in [("full", "--", "full influence function"),
                                 ("second_order", "-.", "second-order (Basu et al.)"),
                                 ("retrain", ":", "retrained without the class")]:
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
    main(*(sys.argv[1:2] or []))
