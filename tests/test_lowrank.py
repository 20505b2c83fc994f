"""Low-rank curvature solvers ("nystrom", "arnoldi") against dense linear algebra.

The truth: ``numpy.linalg`` solves of ``M + δI`` and the truncated eigen-formula
``U diag(1/(λ+δ)) Uᵀ b + (b − UUᵀb)/δ`` from ``numpy.linalg.eigh``; for networks the
dense solver on the same (exact) curvature.
"""

import numpy as np
import pytest
from skinfluence._sklearn_compat import InvalidParameterError

from skinfluence import FisherInfluence
from skinfluence.curvature import make_solver
from skinfluence.curvature.factor import DenseSolver
from skinfluence.curvature.operators import CurvatureOperator
from skinfluence.exceptions import CurvatureError
from skinfluence.models.torch import TorchModel

from conftest import lbfgs, penalised_cross_entropy, tanh_mlp

P = 200
DAMPING = 1e-2
LOW_RANK = ["nystrom", "arnoldi"]


def _spectrum_matrix(p=P, seed=0):
    """A PSD matrix with eigenvalues 10·0.93^i (decaying over seven orders of magnitude)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    M = (Q * (10 * 0.93 ** np.arange(p))) @ Q.T
    return (M + M.T) / 2


M = _spectrum_matrix()
B = np.random.default_rng(1).standard_normal((P, 3))


def _truncated(M, r, delta, b):
    w, V = np.linalg.eigh(M)
    U, lam = V[:, np.argsort(-w)[:r]], np.sort(w)[::-1][:r]
    return U @ ((U.T @ b) / (lam + delta)[:, None]) + (b - U @ (U.T @ b)) / delta, U, lam


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("name", LOW_RANK)
def test_full_rank_is_the_dense_solve(name):
    s = make_solver(name, CurvatureOperator.from_matrix(M), damping=DAMPING, rank=P, random_state=0)
    assert _rel(s.solve(B), np.linalg.solve(M + DAMPING * np.eye(P), B)) < 1e-8
    assert _rel(s.solve(B[:, 0]), np.linalg.solve(M + DAMPING * np.eye(P), B[:, 0])) < 1e-8
    assert s.info_["exact"] and s.info_["rank"] == P
    assert s.info_["trace_fraction"] == pytest.approx(1.0, abs=1e-10)


def test_arnoldi_rank_r_is_the_truncated_eigen_formula():
    r = 30
    s = make_solver("arnoldi", CurvatureOperator.from_matrix(M), damping=DAMPING, rank=r, random_state=0)
    want, U, lam = _truncated(M, r, DAMPING, B)
    assert _rel(s.solve(B), want) < 1e-8
    np.testing.assert_allclose(s.eigenvalues, lam, rtol=1e-10)
    # the stated error: ‖(M + δI) P − I‖₂ = λ_{r+1} / δ
    lam_next = np.sort(np.linalg.eigvalsh(M))[::-1][r]
    err = np.linalg.norm((M + DAMPING * np.eye(P)) @ s.inverse() - np.eye(P), 2)
    assert err == pytest.approx(lam_next / DAMPING, rel=1e-8)
    info = s.info_
    assert info["rank"] == r and not info["exact"]
    assert info["eigenvalue_range"] == pytest.approx((lam[-1], lam[0]), rel=1e-10)
    assert info["trace_fraction"] == pytest.approx(lam.sum() / np.trace(M), rel=0.02)  # Hutch++ estimate
    assert info["n_products"] > r and info["seconds"] >= 0


@pytest.mark.parametrize("seed", range(4))
def test_nystrom_is_within_its_stated_error(seed):
    r, over = 30, 10
    s = make_solver("nystrom", CurvatureOperator.from_matrix(M), damping=DAMPING, rank=r,
                    oversampling=over, random_state=seed)
    Mhat = (s.U * s.eigenvalues) @ s.U.T
    assert s.info_["rank"] == r and s.info_["sketch"] == r + over
    # 0 ≼ M̂ ≼ M, and the solve is exactly (M̂ + δI)⁻¹ b
    assert np.linalg.eigvalsh(M - Mhat).min() > -1e-10 * np.abs(M).max()
    assert s.eigenvalues.min() >= 0
    assert _rel(s.solve(B), np.linalg.solve(Mhat + DAMPING * np.eye(P), B)) < 1e-8
    # ‖x̂ − x‖ ≤ ‖M − M̂‖₂ / δ · ‖x‖
    x = np.linalg.solve(M + DAMPING * np.eye(P), B)
    bound = np.linalg.norm(M - Mhat, 2) / DAMPING
    assert np.all(np.linalg.norm(s.solve(B) - x, axis=0) <= bound * np.linalg.norm(x, axis=0))
    # Tropp et al. (2017, Thm 4.1): E‖M − [M̂]_r‖_* ≤ (1 + r/(s − r − 1)) Σ_{i>r} λ_i
    tail = np.sort(np.linalg.eigvalsh(M))[::-1][r:].sum()
    assert np.trace(M - Mhat) <= (1 + r / (over - 1)) * tail
    # and the sketch is no better than the best rank r (the truncated eigen-formula)
    assert np.trace(M - Mhat) >= tail * (1 - 1e-10)
    # the captured share of the trace: Σλ̂ plus probes of the (PSD) remainder R, so ≤ 1, and
    # the trace within 4 standard deviations of an 8-probe Hutchinson estimate (≤ ‖R‖_F·√(2/8))
    fraction = s.info_["trace_fraction"]
    assert fraction <= 1
    assert abs(s.eigenvalues.sum() / fraction - np.trace(M)) <= 4 * np.sqrt(2 / 8) * np.linalg.norm(M - Mhat)


@pytest.mark.parametrize("name", LOW_RANK)
def test_the_diagonal_part_is_kept_exactly(name):
    # a penalty's curvature (here non-uniform) is not approximated: (U Λ Uᵀ + D + δI)⁻¹
    D = np.linspace(0.01, 1.0, P)
    op = CurvatureOperator.from_matrix(M).add_diagonal(D)
    full = make_solver(name, op, damping=DAMPING, rank=P, random_state=0)
    assert _rel(full.solve(B), np.linalg.solve(M + np.diag(D + DAMPING), B)) < 1e-8
    s = make_solver(name, op, damping=DAMPING, rank=30, random_state=0)
    Khat = (s.U * s.eigenvalues) @ s.U.T
    assert _rel(s.solve(B), np.linalg.solve(Khat + np.diag(D + DAMPING), B)) < 1e-8
    if name == "arnoldi":   # the top eigenpairs of M's data part, not of M
        np.testing.assert_allclose(s.eigenvalues, np.sort(np.linalg.eigvalsh(M))[::-1][:30], rtol=1e-10)


@pytest.mark.parametrize("name", LOW_RANK)
def test_random_state_makes_it_deterministic(name):
    op = CurvatureOperator.from_matrix(M)
    a = make_solver(name, op, damping=DAMPING, rank=20, random_state=3).solve(B)
    b = make_solver(name, op, damping=DAMPING, rank=20, random_state=3).solve(B)
    np.testing.assert_array_equal(a, b)
    if name == "nystrom":   # another sketch, another answer
        assert not np.allclose(a, make_solver(name, op, damping=DAMPING, rank=20, random_state=4).solve(B))


def _null_and_active():
    rng = np.random.default_rng(2)
    z = rng.standard_normal(P)
    z /= np.linalg.norm(z)
    proj = np.eye(P) - np.outer(z, z)
    Mz = proj @ M @ proj                          # M is blind to z
    active = np.ones(P, bool)
    active[rng.choice(P, 15, replace=False)] = False
    return Mz, z[:, None], active


@pytest.mark.parametrize("name", LOW_RANK)
def test_null_space_and_held_coordinates(name):
    Mz, Z, active = _null_and_active()
    op = CurvatureOperator.from_matrix(Mz)
    full = make_solver(name, op, damping=DAMPING, null_space=Z, active=active, rank=P, random_state=0)
    dense = DenseSolver(Mz, DAMPING, Z, active)
    np.testing.assert_array_equal(full.solve(B)[~active], 0.0)
    assert _rel(full.solve(B), dense.solve(B)) < 1e-8
    if name == "arnoldi":   # rank r: the truncated formula on (M + ZZᵀ)_AA
        K = (Mz + Z @ Z.T)[np.ix_(active, active)]
        s = make_solver(name, op, damping=DAMPING, null_space=Z, active=active, rank=25, random_state=0)
        want = np.zeros_like(B)
        want[active] = _truncated(K, 25, DAMPING, B[active])[0]
        assert _rel(s.solve(B), want) < 1e-8


@pytest.mark.parametrize("name", LOW_RANK)
@pytest.mark.parametrize("per_sample", [False, True])
def test_downdated_solve_is_woodbury_on_the_low_rank_inverse(name, per_sample):
    rng = np.random.default_rng(5)
    n, K = 3, 2
    J = rng.standard_normal((n, K, P)) * 0.1
    Cb = np.stack([np.diag([0.5, 0.2])] * n)
    shift = 1e-3                                  # a removed share of a uniform penalty
    Jf, C = J.reshape(-1, P), np.kron(np.eye(n), Cb[0])
    down = Jf.T @ C @ Jf + shift * np.eye(P)
    U, Cin = (J, Cb) if per_sample else (Jf, C)
    op = CurvatureOperator.from_matrix(M)
    full = make_solver(name, op, damping=DAMPING, rank=P, random_state=0)
    want = np.linalg.solve(M - down + DAMPING * np.eye(P), B)
    assert _rel(full.downdated_solve(B, U, Cin, np.full(P, shift)), want) < 1e-8
    s = make_solver(name, op, damping=DAMPING, rank=30, random_state=0)
    Mhat = (s.U * s.eigenvalues) @ s.U.T
    want = np.linalg.solve(Mhat - down + DAMPING * np.eye(P), B)
    assert _rel(s.downdated_solve(B, U, Cin, shift), want) < 1e-8


@pytest.mark.parametrize("name", LOW_RANK)
def test_bad_options_raise(name):
    op = CurvatureOperator.from_matrix(M)
    with pytest.raises(ValueError, match="damping='auto'"):
        make_solver(name, op, damping=0.0, rank=5)
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        make_solver(name, op, damping=DAMPING, rank=0)
    with pytest.raises(ValueError, match=r"\['rnak'\] are not options"):   # declared options
        make_solver(name, op, damping=DAMPING, rnak=5)
    # a Hessian with negative curvature beyond the damping
    indefinite = CurvatureOperator.from_matrix(M - 0.5 * np.eye(P))
    with pytest.raises(CurvatureError, match="pass damping >"):
        make_solver("arnoldi", indefinite, damping=DAMPING, rank=P)


def test_inverse_refuses_a_large_p():
    p = 30_000                                    # M⁻¹ would take 6.7 GiB
    op = CurvatureOperator(p, lambda V: V * np.linspace(1, 2, p).reshape((p,) + (1,) * (V.ndim - 1)))
    s = make_solver("nystrom", op, damping=1.0, rank=5, random_state=0)
    assert s.solve(np.ones(p)).shape == (p,)
    with pytest.raises(MemoryError, match="attribute and influence_factors need none"):
        s.inverse()


# ------------------------------------------------------------ through the estimators
@pytest.fixture(scope="module")
def net_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 8))
    y = (np.argmax(X[:, :4] + 0.5 * rng.standard_normal((90, 4)), axis=1)).astype(np.int64)
    net = tanh_mlp(8, 14, 4)
    lbfgs(net.parameters(), penalised_cross_entropy(net, X, y, 1e-2), max_iter=500, tolerance_grad=1e-12,
          tolerance_change=1e-15)
    return TorchModel(net, weight_decay=1e-2), X, y


def _fit(model, X, y, solver, **kw):
    return FisherInfluence(model, prefit=True, solver=solver, damping=1e-3, random_state=0, **kw).fit(X, y)


@pytest.mark.parametrize("name", LOW_RANK)
def test_attribute_and_self_influence_at_full_rank(net_problem, name):
    model, X, y = net_problem
    dense = _fit(model, X, y, "dense")
    p = dense.adapter_.n_params
    assert p == 186
    low = _fit(model, X, y, name, solver_options={"rank": p})
    # all p eigenpairs (the sketch drops those below its pseudo-inverse cut, ~1e-14 of the largest)
    assert low.solver_ == name and low.curvature_solver_.info_["rank"] <= p
    np.testing.assert_allclose(low.attribute(X[:5], y[:5]), dense.attribute(X[:5], y[:5]),
                               rtol=1e-8, atol=1e-8 * np.abs(dense.attribute(X[:5], y[:5])).max())
    s_dense = dense.self_influence("ij")
    np.testing.assert_allclose(low.self_influence("ij"), s_dense, rtol=1e-8, atol=1e-8 * np.abs(s_dense).max())
    # the Newton-step version: non-dense solvers keep the removed penalty share (as CG does)
    s_cg = _fit(model, X, y, "cg", solver_options={"tol": 1e-13}).self_influence()
    np.testing.assert_allclose(low.self_influence(), s_cg, rtol=1e-8, atol=1e-8 * np.abs(s_cg).max())
    # a removal goes through the Woodbury down-date on the low-rank inverse
    np.testing.assert_allclose(low.parameter_change([3, 7]), dense.parameter_change([3, 7]), rtol=1e-7,
                               atol=1e-8 * np.abs(dense.parameter_change([3, 7])).max())


def test_attribute_at_rank_r_is_the_truncated_formula(net_problem):
    model, X, y = net_problem
    dense = _fit(model, X, y, "dense")
    low = _fit(model, X, y, "arnoldi", solver_options={"rank": 40, "tol": 0.0})
    decay = dense.adapter_.penalty.hessian_diagonal()       # weight decay: kept exactly
    K = dense.curvature_solver_.curvature - np.diag(decay)   # the data term is made low-rank
    G = dense.adapter_.gradients(dense.adapter_.design(X[:4]),
                                 dense.adapter_.loss.gradient(y[:4], dense.adapter_.eta(X[:4])))
    F = _truncated(K, 40, decay[0] + 1e-3, G.T)[0].T
    want = dense.influences_from_factors(F)
    np.testing.assert_allclose(low.attribute(X[:4], y[:4]), want, rtol=1e-8, atol=1e-8 * np.abs(want).max())


def test_solver_options_are_validated(net_problem):
    model, X, y = net_problem
    with pytest.raises(ValueError, match=r"not options of solver='nystrom'; valid: \['oversampling', 'rank'"):
        _fit(model, X, y, "nystrom", solver_options={"rnak": 5})
    with pytest.raises(ValueError, match=r"valid: \['redamp'\]"):
        _fit(model, X, y, "dense", solver_options={"rank": 5})
    with pytest.raises(ValueError, match="'max_iter'"):                  # cg's own options are listed
        _fit(model, X, y, "cg", solver_options={"rank": 5})
    with pytest.raises(InvalidParameterError, match="solver_options"):
        _fit(model, X, y, "nystrom", solver_options=[("rank", 5)])
    with pytest.raises(ValueError, match="damping='auto'"):
        FisherInfluence(model, prefit=True, solver="arnoldi").fit(X, y)
    cg = _fit(model, X, y, "cg", solver_options={"tol": 1e-12})
    assert cg.curvature_solver_.tol == 1e-12
    auto = FisherInfluence(model, prefit=True, solver="nystrom", damping="auto", random_state=0,
                           solver_options={"rank": 20}).fit(X, y)
    assert auto.damping_ > 0 and auto.curvature_solver_.info_["rank"] == 20


def test_old_option_spelling_warns():
    """``maxiter`` (cg, lissa) is scikit-learn's ``max_iter`` now; the old spelling still
    works, with a FutureWarning, and both at once is an error."""
    op = CurvatureOperator.from_matrix(M)
    b = np.ones(P)
    with pytest.warns(FutureWarning, match="renamed 'max_iter'"):
        old = make_solver("cg", op, damping=DAMPING, maxiter=3)
    new = make_solver("cg", op, damping=DAMPING, max_iter=3)
    np.testing.assert_array_equal(old.solve(b), new.solve(b))
    with pytest.raises(ValueError, match="both 'maxiter' and 'max_iter'"), \
            pytest.warns(FutureWarning):
        make_solver("cg", op, damping=DAMPING, maxiter=3, max_iter=3)
