"""K-FAC and EK-FAC against curvlinops and kronfluence on a tiny network (to rounding).

A conv + linear network (biases included, float64) on random 6×6 images, 3 classes, mean
cross-entropy. Our ``solver="kfac"`` / ``"ekfac"`` factors are compared, as p × p matrices, with

* curvlinops' ``KFACLinearOperator`` / ``EKFACLinearOperator`` (``kfac_approx="expand"``,
  weight and bias factored together), for the exact Fisher (``fisher_type="type-2"``, ours
  ``fisher="exact"``), the empirical Fisher and the MC Fisher (ours then uses curvlinops'
  sampled labels: the two draw them differently, so the MC test is of the same formula on
  the same labels: we give both the empirical Fisher of the sampled labels);
* kronfluence's EK-FAC (its factors and eigenvalue corrections, float64, on the empirical
  Fisher: its task's training loss with ``sample=False``), rescaled to our normalisation.

Neither peer is a dependency of skinfluence; run in a separate environment::

    python -m venv --system-site-packages /tmp/benchvenv
    /tmp/benchvenv/bin/pip install -c constraints.txt curvlinops-for-pytorch kronfluence
    /tmp/benchvenv/bin/python benchmarks/validate_kfac.py

(``constraints.txt`` pins the installed torch). Prints the largest relative differences.
"""

import tempfile
import warnings

import numpy as np
import torch

from skinfluence import FisherInfluence
from skinfluence.models.torch import TorchModel

warnings.filterwarnings("ignore")
N, K = 30, 3


def make():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(18, 4), torch.nn.Tanh(), torch.nn.Linear(4, K)).double()
    rng = np.random.default_rng(0)
    return net, rng.standard_normal((N, 1, 6, 6)), rng.integers(0, K, N)


def ours(net, X, y, solver, fisher):
    """Our Kronecker-factored curvature as a p × p matrix (no penalty, no damping)."""
    inf = FisherInfluence(TorchModel(net, loss="cross_entropy"), prefit=True, solver=solver, damping=1.0,
                          fisher=fisher).fit(X, y)
    p = inf.adapter_.n_params
    M = np.zeros((p, p))
    for index, QA, QG, lam, _ in inf.curvature_solver_.layers.values():
        Q = np.kron(QG, QA)
        M[np.ix_(index.ravel(), index.ravel())] = Q @ np.diag(lam.ravel()) @ Q.T
    return M


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def curvlinops_rows(net, X, y):
    from curvlinops import EKFACLinearOperator, KFACLinearOperator

    data = [(torch.as_tensor(X), torch.as_tensor(y))]
    params = [p for p in net.parameters()]
    loss = torch.nn.CrossEntropyLoss()
    out = []
    for fisher, theirs in (("exact", "type-2"), ("empirical", "empirical")):
        for solver, cls in (("kfac", KFACLinearOperator), ("ekfac", EKFACLinearOperator)):
            op = cls(net, loss, params, data, fisher_type=theirs, separate_weight_and_bias=False,
                     check_deterministic=False)
            p = sum(q.numel() for q in params)
            ref = (op @ torch.eye(p, dtype=torch.float64)).numpy()
            out.append((f"{solver} vs curvlinops {cls.__name__}", fisher, rel(ours(net, X, y, solver, fisher), ref)))
    return out


def kronfluence_rows(net, X, y):
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments
    from kronfluence.task import Task
    from torch.utils.data import TensorDataset

    class T(Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, t = batch
            return torch.nn.functional.cross_entropy(model(x), t, reduction="sum")

        def compute_measurement(self, batch, model):
            return self.compute_train_loss(batch, model)

    model = prepare_model(make()[0], T())
    with tempfile.TemporaryDirectory() as tmp:
        an = Analyzer("validate", model, T(), output_dir=tmp, disable_tqdm=True, cpu=True, disable_model_save=True)
        ds = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
        args = FactorArguments(strategy="ekfac", use_empirical_fisher=True, activation_covariance_dtype=torch.float64,
                               gradient_covariance_dtype=torch.float64, eigendecomposition_dtype=torch.float64,
                               lambda_dtype=torch.float64)
        an.fit_all_factors("f", ds, per_device_batch_size=N, factor_args=args, overwrite_output_dir=True)
        factors = an.load_all_factors("f")
    # kronfluence: A = Σ a aᵀ / N, G = Σ g gᵀ / N (gradients of the summed loss), Λ = Σ (rotated S)² / N;
    # ours (mean loss, c_i = 1/N): A = Σ a aᵀ / N, G = Σ g gᵀ / N², Λ = Σ (rotated S)² / N².
    inf = FisherInfluence(TorchModel(net, loss="cross_entropy"), prefit=True, solver="ekfac", damping=1.0,
                          fisher="empirical").fit(X, y).curvature_solver_
    out = []
    for name, (index, QA, QG, lam, _) in inf.layers.items():
        key = f"{name}"
        lam_k = factors["lambda_matrix"][key].numpy() / N
        A_k = factors["activation_eigenvectors"][key].numpy()
        G_k = factors["gradient_eigenvectors"][key].numpy()
        # the same subspaces (eigenvectors up to sign): compare the projectors weighted by Λ
        ours_M = np.kron(QG, QA) @ np.diag(lam.ravel()) @ np.kron(QG, QA).T
        theirs_M = np.kron(G_k, A_k) @ np.diag(lam_k.ravel()) @ np.kron(G_k, A_k).T
        out.append((f"ekfac vs kronfluence, layer {name}", "empirical", rel(ours_M, theirs_M)))
    return out


def main():
    net, X, y = make()
    rows = []
    for label, fn in (("curvlinops", curvlinops_rows), ("kronfluence", kronfluence_rows)):
        try:
            rows += fn(net, X, y)
        except ImportError as exc:
            print(f"{label} not importable ({exc}): skipped")
    print("| comparison | Fisher | max relative difference |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1e} |")


if __name__ == "__main__":
    main()
