"""Low-rank curvature solvers on a wide network: time and agreement of attribution scores.

The model is ``benchmarks/gif_digits.py``'s wide MLP (64 → 300 → 300 → 10, 112,810
parameters, float64, tanh), trained by full-batch L-BFGS on the mean cross-entropy plus
``1e-3/2 ‖θ‖²`` (the same cached network). Scores are
``S[j, i] = ∇ℓ_jᵀ (M + δI)⁻¹ ∇ℓ_i`` for ``--n-test`` test points × all 1,078 training
rows, with ``M`` the curvature of the mean objective estimated on a batch of ``--rows``
training rows (as gif_digits does) plus the weight decay, and ``δ`` the package's
``damping="auto"`` (0.1 · trace(M)/p, the trace computed exactly here).

The curvature is pyDVL's ``SecondOrderMode.GAUSS_NEWTON``, the empirical Fisher
``(1/m) Σ ∇ℓ_i ∇ℓ_iᵀ`` (skinfluence's ``fisher="empirical"``), because (a) both libraries
offer it, so both solve the same system (pyDVL's ``regularization`` is weight decay + δ,
its "up" influence is ``S``), and (b) it is positive semi-definite on a batch (the
batch Hessian of this net is indefinite beyond ``δ``, which stops CG) and of rank ≤ m,
so the truth is computable: the reference is the **exact** solve through the m × m dual
``(AᵀA + λI)⁻¹ b = (b − Aᵀ(λI + AAᵀ)⁻¹A b)/λ`` with ``A`` the batch's per-sample gradients
/ √m. (CG to a tight tolerance converges to it; it is shown as a contender.)

Contenders (time = preparation + test factors + scores, including the gradients each
needs; median of ``--repeats`` runs, one process, one thread):

* skinfluence ``cg`` (tol ``--cg-tol``), ``lissa`` (truncated at ``--lissa-iter`` steps),
  ``nystrom`` and ``arnoldi`` at ``--ranks``;
* pyDVL 0.10 ``NystroemSketchInfluence`` at the same ranks and ``ArnoldiInfluence`` at
  ``--pydvl-arnoldi-ranks`` (its default inverts only on the eigen-subspace;
  ``use_woodbury=True`` adds the complement; each of its single-vector products
  recomputes the batch's per-sample gradients, so it is slow), as they come and
  "rescaled": pyDVL 0.10's ``GaussNewtonOperator`` divides its product by the number of
  columns it is given (``--check-pydvl-scaling`` prints the measurement), so its
  solvers solve another system; the rescaled rows undo that by scaling the loss (see
  :func:`pydvl`). ``CgInfluence`` (block CG through the same operator, so also another
  system; not rescaled) only with ``--pydvl-cg``. ``--skip-pydvl`` leaves pyDVL out.

Agreement with the reference: relative Frobenius error, Pearson correlation over all
pairs, and the mean over test points of the Spearman correlation over training rows
(the ranking a user reads). Results per contender are cached in
``benchmarks/.cache/`` (ignored by git; ``--fresh`` recomputes them).

Run: ``python benchmarks/lowrank.py`` (about 30 minutes on one loaded core).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import stats

from skinfluence.curvature import make_solver
from skinfluence.curvature.operators import model_curvature
from skinfluence.models import make_adapter
from skinfluence.models.torch import TorchModel

from _common import WD, cached, digits_three_way, gif_net, pinned_threads


# ------------------------------------------------------------------- the problem
class Problem:
    """The trained net, the curvature batch, the damping and the exact reference."""

    def __init__(self, n_test, rows, seed):
        self.Xtr, self.ytr, _, _, Xte, yte = digits_three_way(seed)
        self.net, _ = gif_net("mlp", self.Xtr, self.ytr, seed)
        self.net.eval()
        self.Xte, self.yte = Xte[:n_test], yte[:n_test]
        self.batch = np.sort(np.random.default_rng(seed).choice(len(self.ytr), rows, replace=False))
        self.adapter = make_adapter(TorchModel(self.net, weight_decay=WD), dtype="float64",
                                    device="cpu", fisher="empirical")
        ad = self.adapter
        self.p = ad.n_params
        A = self.gradients(self.Xtr[self.batch], self.ytr[self.batch]) / np.sqrt(rows)
        trace = float(np.einsum("ij,ij->", A, A)) + WD * self.p        # trace(M), exactly
        self.damping = 0.1 * trace / self.p                              # damping="auto"
        lam = WD + self.damping
        inner = np.linalg.cholesky(lam * np.eye(rows) + A @ A.T)

        def exact_solve(B):                                              # (AᵀA + λI)⁻¹ B
            return (B - A.T @ np.linalg.solve(inner.T, np.linalg.solve(inner, A @ B))) / lam

        self.reference = self.scores(exact_solve)
        self.spectrum = np.linalg.eigvalsh(A @ A.T)[::-1] + WD          # M's top eigenvalues
        self.key = (n_test, rows, seed, f"{self.damping:.12e}")

    def gradients(self, X, y):
        """Per-sample loss gradients, (len(y), p)."""
        ad = self.adapter
        Z = ad.design(X)
        return ad.gradients(Z, ad.loss.gradient(y, ad.eta(Z)))

    def operator(self):
        """skinfluence's curvature operator on the batch: empirical Fisher of the mean loss + WD."""
        ad, b = self.adapter, self.batch
        Z = ad.design(self.Xtr[b])
        op = model_curvature(ad, Z, self.ytr[b], np.full(len(b), 1 / len(b)), "fisher", ad.eta(Z))
        return op.add_diagonal(ad.penalty.hessian_diagonal())

    def scores(self, solve):
        """``S = G_test (M + δI)⁻¹ G_trainᵀ`` with ``solve(B) = (M + δI)⁻¹ B``."""
        F = solve(self.gradients(self.Xte, self.yte).T).T
        return F @ self.gradients(self.Xtr, self.ytr).T


# -------------------------------------------------------------------- contenders
def ours(name, **options):
    def run(problem):
        solver = make_solver(name, problem.operator(), damping=problem.damping, random_state=0, **options)
        S = problem.scores(solver.solve)
        return S, {k: v for k, v in solver.info_.items()
                   if k in ("rank", "trace_fraction", "n_products", "iterations", "total_iterations")}
    return run


def pydvl(kind, rescale=False, **options):
    """pyDVL's influence ``kind``; ``rescale`` undoes its Gauss–Newton operator's scaling.

    pyDVL 0.10's ``GaussNewtonOperator`` returns ``(1/N) Σ ∇ℓ_i ∇ℓ_iᵀ V`` divided by the
    number of columns of ``V`` (by p for a single vector; see ``check_pydvl_scaling``).
    Arnoldi multiplies single vectors (÷ p) and the Nyström sketch one block of ``rank``
    columns (÷ rank): scaling the loss by ``√s`` (s = p or rank) makes the operator the
    true one, and the scores come out ``s`` times too large, which is divided out."""
    def run(problem):
        from pydvl.influence.torch import ArnoldiInfluence, CgInfluence, NystroemSketchInfluence
        from pydvl.influence.torch.util import SecondOrderMode
        from torch.utils.data import DataLoader, TensorDataset

        cls = {"cg": CgInfluence, "arnoldi": ArnoldiInfluence, "nystrom": NystroemSketchInfluence}[kind]
        b = problem.batch
        loader = DataLoader(TensorDataset(torch.as_tensor(problem.Xtr[b]), torch.as_tensor(problem.ytr[b])),
                            batch_size=len(b))
        scale = (problem.p if kind == "arnoldi" else options["rank"]) if rescale else 1

        def loss(out, y):
            return np.sqrt(scale) * torch.nn.functional.cross_entropy(out, y)

        model = cls(problem.net, loss, regularization=WD + problem.damping,
                    second_order_mode=SecondOrderMode.GAUSS_NEWTON, **options).fit(loader)
        up = model.influences(torch.as_tensor(problem.Xte), torch.as_tensor(problem.yte),
                              torch.as_tensor(problem.Xtr), torch.as_tensor(problem.ytr))
        return up.detach().numpy() / scale, {}
    return run


def check_pydvl_scaling(problem):
    """Print skinfluence's empirical-Fisher product over pyDVL's ``GaussNewtonOperator``'s."""
    from pydvl.influence.torch.operator import GaussNewtonOperator
    from torch.utils.data import DataLoader, TensorDataset

    b = problem.batch
    loader = DataLoader(TensorDataset(torch.as_tensor(problem.Xtr[b]), torch.as_tensor(problem.ytr[b])),
                        batch_size=len(b))
    theirs_op = GaussNewtonOperator(problem.net, torch.nn.functional.cross_entropy, loader)
    ours_op = problem.operator()
    rng = np.random.default_rng(0)
    for cols in (1, 3, 10):
        V = rng.standard_normal((cols, problem.p))
        V = V[0] if cols == 1 else V
        theirs = theirs_op.apply(torch.as_tensor(V)).detach().numpy()
        ours = ours_op.matvec(V.T).T - WD * V                    # the data term alone
        ratio = float((ours * theirs).sum() / (theirs * theirs).sum())
        rest = np.linalg.norm(ours - ratio * theirs) / np.linalg.norm(ours)
        print(f"  V with {cols:2d} column(s): skinfluence / pyDVL = {ratio:.6g} (residual {rest:.1e})")


def contenders(args):
    out = [(f"skinfluence nystrom r={r}", ours("nystrom", rank=r)) for r in args.ranks]
    out += [(f"skinfluence arnoldi r={r}", ours("arnoldi", rank=r)) for r in args.ranks]
    if not args.skip_pydvl:
        out += [(f"pyDVL NystroemSketch r={r}", pydvl("nystrom", rank=r)) for r in args.ranks]
        out += [(f"pyDVL Arnoldi r={r}", pydvl("arnoldi", rank=r)) for r in args.pydvl_arnoldi_ranks]
        out += [(f"pyDVL Arnoldi r={r} use_woodbury", pydvl("arnoldi", rank=r, use_woodbury=True))
                for r in args.pydvl_arnoldi_ranks]
        out += [(f"pyDVL NystroemSketch r={r} rescaled", pydvl("nystrom", True, rank=r)) for r in args.ranks]
        out += [(f"pyDVL Arnoldi r={r} use_woodbury rescaled", pydvl("arnoldi", True, rank=r, use_woodbury=True))
                for r in args.pydvl_arnoldi_ranks]
    out += [("skinfluence lissa", ours("lissa", maxiter=args.lissa_iter, truncate=True)),
            ("skinfluence cg", ours("cg", tol=args.cg_tol))]
    if args.pydvl_cg:
        out += [("pyDVL CgInfluence", pydvl("cg", rtol=args.cg_tol, atol=0.0, solve_simultaneously=True,
                                             warn_on_max_iteration=False))]
    return out


# ----------------------------------------------------------------------- metrics
def agreement(S, ref):
    rel = np.linalg.norm(S - ref) / np.linalg.norm(ref)
    pearson = stats.pearsonr(S.ravel(), ref.ravel())[0]
    spearman = np.mean([stats.spearmanr(s, r)[0] for s, r in zip(S, ref)])
    return rel, pearson, spearman


def measure(problem, name, run, repeats, fresh):
    """(median seconds, scores, info) of the contender ``run`` (cached by problem and name)."""
    def timed():
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            S, info = run(problem)
            times.append(time.perf_counter() - t)
        return float(np.median(times)), S, info

    return cached("lowrank", timed, *problem.key, name, repeats, fresh=fresh)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-test", type=int, default=50)
    ap.add_argument("--rows", type=int, default=256, help="training rows that build the curvature")
    ap.add_argument("--ranks", type=int, nargs="+", default=[50, 100, 200])
    ap.add_argument("--pydvl-arnoldi-ranks", type=int, nargs="*", default=[50],
                    help="pyDVL's Arnoldi recomputes the batch's per-sample gradients in every product")
    ap.add_argument("--cg-tol", type=float, default=1e-6)
    ap.add_argument("--lissa-iter", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, help="contenders whose name contains one of these")
    ap.add_argument("--skip-pydvl", action="store_true")
    ap.add_argument("--pydvl-cg", action="store_true",
                    help="also pyDVL's block CG (slow; its Gauss-Newton products are mis-scaled)")
    ap.add_argument("--check-pydvl-scaling", action="store_true",
                    help="print pyDVL's Gauss-Newton product against skinfluence's and stop")
    ap.add_argument("--fresh", action="store_true", help="ignore cached results")
    args = ap.parse_args()
    with pinned_threads(1):
        problem = Problem(args.n_test, args.rows, args.seed)
        s = problem.spectrum
        print(f"model: {problem.p:,} parameters; curvature: empirical Fisher on {args.rows} rows + weight decay "
              f"{WD:g}; damping δ = {problem.damping:.3g}; M's eigenvalues {s[0]:.3g} … {s[-1]:.3g} "
              f"(rank {args.rows} + WD); top 50/100/200 hold "
              + "/".join(f"{(s[:k] - WD).sum() / (s - WD).sum():.1%}" for k in (50, 100, 200))
              + " of the data term's trace")
        if args.check_pydvl_scaling:
            check_pydvl_scaling(problem)
            return
        print(f"scores: {args.n_test} test points × {len(problem.ytr)} training rows; reference: exact dual solve\n")
        rows = []
        for name, run in contenders(args):
            if args.only and not any(o in name for o in args.only):
                continue
            seconds, S, info = measure(problem, name, run, args.repeats, args.fresh)
            rel, pr, sp = agreement(S, problem.reference)
            extra = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
            rows.append((name, seconds, rel, pr, sp, extra))
            print(f"  {name:30s} {seconds:8.1f} s  rel.err {rel:.2e}  pearson {pr:.6f}  spearman {sp:.6f}  {extra}",
                  flush=True)
        cg = next((r[1] for r in rows if r[0] == "skinfluence cg"), None)
        print("\n| method | time (s) | vs our CG | rel. error | Pearson | Spearman (mean per test point) | notes |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for name, seconds, rel, pr, sp, extra in rows:
            ratio = f"{seconds / cg:.2f}×" if cg else ""
            print(f"| {name} | {seconds:.1f} | {ratio} | {rel:.2e} | {pr:.6f} | {sp:.6f} | {extra} |")


if __name__ == "__main__":
    main()
