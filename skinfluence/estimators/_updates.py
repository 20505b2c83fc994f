"""The algebra of removals, written once over an :class:`~._model.InfluenceEngine`.

Removing a set ``U`` of training rows moves the optimum by one Newton step::

    Δθ_U = M_{-U}⁻¹ v_U,     v_U = Σ_{i∈U} c_i ∇ℓ_i + s_U ∇π

with ``M_{-U} = M − Σ_U c_i J_iᵀ W_i J_i`` (the Newton step, "ns"; a network's exact
Hessian keeps the rows' second-derivative term ``Σ_U c_i Σ_k g_ik ∇²η_ik`` unless
:data:`EXACT_HESSIAN_DOWNDATE`, see there why) or ``M`` (the infinitesimal jackknife,
"ij"). For an ℓ1 penalty the step is a proximal Newton step in which coordinates may enter
or leave the support. NS is exact for a quadratic objective and otherwise has error
O(1/n²) per leave-one-out fit of a smooth, strongly convex objective; IJ has error
O(1/n). Both grow with the removed fraction and with leverage.

Attribution is split into *factors* ``M⁻¹ ∇f`` of the test quantities (one solve each)
and *scores*: factors against blocks of training rows' removal gradients, so that
execution can map over blocks.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

from .._linalg import block_gram
from .._utils import row_blocks
from ..curvature.operators import model_curvature
from ..curvature.solvers import InverseOperator
from ..exceptions import InfluenceWarning

__all__ = ["newton_update", "loo_decision", "influence_factors", "scores_from_factors"]


def newton_update(model, idx, g_delta, W_delta, share, method, residual=False):
    """Δθ for a change of the objective on rows ``idx``.

    The change removes ``Σ c_i ℓ_i`` terms whose η-gradients and curvatures change by
    ``g_delta`` and ``W_delta`` (old minus new), and ``share`` of the normaliser. With
    ``residual`` the step is Newton's on the changed objective's own gradient at θ̂,
    ``∇L(θ̂) − v``, rather than on ``−v`` (which assumes ``∇L(θ̂) = 0``): a fit short of the
    optimum then errs at second order, not first (the ℓ1 step below always does this).
    """
    ad, solver = model.adapter, model.solver
    c, held = model.c[idx], model.c[idx] * held_weights(model, idx)
    if ad.is_network and solver.downdates_by_products and ad.penalty.is_smooth:
        return _matrix_free_update(model, idx, g_delta, W_delta, share, method, residual)
    if solver.sparse_rows:                              # a linear model's rows, kept sparse
        J = ad.jacobian_rows(model.Z[idx])               # (m·K, p)
        v = np.asarray(J.T @ (c[:, None] * g_delta).ravel()).ravel() + share * model.pen_grad
    else:
        J = ad.jacobians(model.Z[idx])                  # (m, K, p)
        v = np.einsum("mkp,mk->p", J, c[:, None] * g_delta) + share * model.pen_grad
    if residual and ad.penalty.is_smooth:
        v = v - model.data_grad - model.pen_grad
    # diagonal blocks c_i W_i of the down-date (the m·K × m·K matrix is never formed)
    C = held[:, None, None] * W_delta if method == "ns" else np.zeros_like(W_delta)
    pen_diag = share * ad.penalty.hessian_diagonal() if method == "ns" else 0.0
    pen = ad.penalty
    if pen.is_smooth and method == "ns" and _has_residual_term(model):
        # the rows' second-derivative term R (p × p) joins the down-date as one more
        # block: U = [J; I], C = diag(c W, R), which the solver forms densely (rows ≥ p)
        p = ad.n_params
        R = ad.residual_hessian(model.Z[idx], held[:, None] * g_delta)
        U = np.vstack([J.reshape(-1, p), np.eye(p)])
        return solver.downdated_solve(v, U, linalg.block_diag(*C, R), pen_diag)
    if pen.is_smooth:
        # (with no curvature term to take out, e.g. rows the sample does not hold, the
        # penalty's share still goes)
        if C.any() or np.any(pen_diag):
            return solver.downdated_solve(v, J, C, pen_diag)
        return solver.solve(v)
    # ℓ1: proximal Newton on the new objective's quadratic model
    smooth_grad = model.data_grad + pen.smooth_gradient(ad.theta) - v
    smooth_grad += share * (pen.gradient(ad.theta) - pen.smooth_gradient(ad.theta))
    down = block_gram(J, C)
    down[np.diag_indices_from(down)] += pen_diag
    return solver.prox_step(smooth_grad, ad.theta, pen, 1.0 - share, downdate=down) - ad.theta


def _matrix_free_update(model, idx, g_delta, W_delta, share, method, residual):
    """:func:`newton_update` for a network whose solver takes the down-date as products:
    ``v`` from one backward pass and ``D V = Σ_U c_i J_iᵀ W_i J_i V + s∇²π V`` by Jacobian
    products on the changed rows, never their (m, K, p) Jacobians."""
    ad, solver = model.adapter, model.solver
    c, held = model.c[idx], model.c[idx] * held_weights(model, idx)
    Z = model.Z[idx]
    v = ad.total_gradient(Z, c[:, None] * g_delta) + share * model.pen_grad
    if residual:
        v = v - model.data_grad - model.pen_grad
    C = held[:, None, None] * W_delta
    pen_diag = share * ad.penalty.hessian_diagonal()
    if method != "ns" or not (C.any() or pen_diag.any()):
        return solver.solve(v)
    down = model_curvature(ad, Z, model.y[idx], held, "fisher", model.eta[idx], C).add_diagonal(pen_diag)
    if not _has_residual_term(model):
        return solver.solve_downdated(v, down.matvec)
    R = held[:, None] * g_delta        # the Hessian's rows also lose Σ_U Σ_k c_i g_ik ∇²η_ik
    return solver.solve_downdated(v, lambda V: down.matvec(V) + ad.residual_matvec(Z, R, V))


def held_weights(model, idx):
    """Per row of ``idx``, the multiple of its curvature term ``c_i J_iᵀ W_i J_i`` that the
    curvature holds, and so that a down-date takes out: 1, or for a curvature sampled by a
    ``curvature_sampler`` the row's importance weight there (0 for a row not sampled).
    ``M − D`` is then the sampled curvature of the retained rows, an estimate of theirs as
    unbiased as ``M`` of all rows' and, for a Fisher, positive semi-definite; subtracting
    the rows' exact terms, of which the sample may hold less, can leave it indefinite (a
    whole class removed from a few hundred sampled rows)."""
    idx = np.asarray(idx)
    if model.rows is None:
        return np.ones(len(idx))
    w = np.zeros(model.n)
    np.add.at(w, np.asarray(model.rows), 1.0 if model.row_weights is None else model.row_weights)
    return w[idx]


#: whether a network's exact-Hessian removal step also down-dates the removed rows'
#: second-derivative term (the exact Newton step on the retained objective). Off: measured
#: against retraining it is not the better step. On the 4-5-3 tanh MLP of the tests (120
#: rows, weight decay 1e-2), removing rows {3, 17, 42} leaves a retained Hessian whose smallest
#: eigenvalue falls from 6.2e-3 to 6.6e-4 (5.6e-3 with the Gauss–Newton down-date): the
#: exact step overshoots 11.5× (cosine 0.64 with the refit's change, against 0.985); over
#: 16 random sets of 3 or 12 rows it was closer to the refit in 6.
EXACT_HESSIAN_DOWNDATE = False


def _has_residual_term(model):
    """Whether the down-date takes out the rows' second-derivative term ``Σ_k c_i g_ik ∇²η_ik``:
    with :data:`EXACT_HESSIAN_DOWNDATE`, for a network's exact Hessian (a linear model's
    outputs have none)."""
    return EXACT_HESSIAN_DOWNDATE and model.kind == "hessian" and model.adapter.is_network


#: distinct sample-weight shares up to which NS leave-one-out factorises M − s·∇²π once each
MAX_SHARE_GROUPS = 8


def _inverses(model, method):
    """``(rows, M⁻¹)`` pairs: the inverse each row's leave-one-out step starts from (see
    :func:`_inverse`).

    NS removes a row's share ``s_i`` of a mean-scaled penalty's curvature too. ``M − s ∇²π``
    is factorised once per distinct share (uniform weights: once), so that the per-row
    Woodbury step is exact; beyond ``MAX_SHARE_GROUPS`` distinct shares (varied sample
    weights) that term is dropped, an error of relative order ``s_i``.
    """
    solver, rows = model.solver, np.arange(model.n)
    D = model.adapter.penalty.hessian_diagonal()
    values, which = np.unique(model.share, return_inverse=True)
    if (method == "ij" or not solver.can_shift or not D.any() or not values.any()
            or len(values) > MAX_SHARE_GROUPS):
        return [(rows, _inverse(model, solver))]
    return [(rows[which.ravel() == k], _inverse(model, solver.shifted(s * D)))
            for k, s in enumerate(values)]


def _inverse(model, solver):
    """``M⁻¹`` as the adapter's ``jacobian_quadratic`` reads it: the solver's
    ``inverse_operator()`` (dense ``M⁻¹``, kept on the solver, or solves for the dual form),
    or, for a single-output linear model with fewer rows than parameters, solves in any case
    (``n`` right-hand sides cost less than the ``p × p`` inverse)."""
    ad = model.adapter
    if ad.supports_sparse_rows and ad.n_outputs == 1 and model.n < ad.n_params:
        return InverseOperator(solver)
    return solver.inverse_operator()


def _loo_quadratics(model, rows, A, batch_size):
    """Per block of ``rows``: ``G_i = J_i A J_iᵀ`` and ``q_i = J_i A v_i`` (the IJ output change)."""
    ad = model.adapter
    a_pen = ad.jvp(model.Z[rows], A @ model.pen_grad)   # J_i A ∇π, (len(rows), K)
    # an inverse operator (the dual form) blocks its own work, and has the leverages of all
    # the curvature's rows at once: ask for them in one call
    whole = (ad.jacobian_quadratic(model.Z, A)
             if not isinstance(A, np.ndarray) and np.array_equal(rows, np.arange(model.n)) else None)
    for sl in row_blocks(len(rows), batch_size):
        r = rows[sl]
        G = whole[sl] if whole is not None else ad.jacobian_quadratic(model.Z[r], A)  # (b, K, K)
        q = model.c[r, None] * np.einsum("bkl,bl->bk", G, model.g[r]) + model.share[r, None] * a_pen[sl]
        yield r, G, q


def _batched_solve(M, b):
    """Solve ``M[i] x[i] = b[i]`` for stacks of small systems."""
    if M.shape[-1] == 1:
        return b / M[..., 0]
    return np.linalg.solve(M, b[..., None])[..., 0]


def loo_decision(model, method, batch_size):
    """Approximate leave-one-out outputs ``η_{-i}(x_i)``, shape (n, K).

    NS uses the Woodbury identity per row, from one factorisation:
    ``η_{-i} − η_i = (I − c_i G_i W_i)⁻¹ J_i M⁻¹ v_i`` (``c_i`` times the row's
    :func:`held_weights` in the down-date). Rows whose removal leaves the
    curvature singular (leverage 1) get NaN and a warning. For an ℓ1 penalty the step
    keeps the support; rows whose removal changes it (a coefficient crosses zero, or a
    zero one's gradient exceeds its threshold) are detected and take the exact proximal
    step of :func:`newton_update` instead.
    """
    out = np.empty_like(model.eta)
    bad = np.zeros(model.n, bool)
    held = model.c * held_weights(model, np.arange(model.n))
    eye = np.eye(model.adapter.n_outputs)
    groups = _inverses(model, method)
    for rows, A in groups:
        for r, G, q in _loo_quadratics(model, rows, A, batch_size):
            if method == "ns":
                D = eye - held[r, None, None] * G @ model.W[r]
                det = D[:, 0, 0] if D.shape[1] == 1 else np.linalg.det(D)
                sing = np.abs(det) < 1e-10
                D[sing] = eye
                q = _batched_solve(D, q)
                q[sing] = np.nan
                bad[r] = sing
            out[r] = model.eta[r] + q
    if bad.any():
        warnings.warn(f"{bad.sum()} training points have leverage 1: their leave-one-out "
                      "prediction is undefined (NaN)", InfluenceWarning, stacklevel=3)
    ad = model.adapter
    if method == "ns" and not ad.penalty.is_smooth:
        for i in _support_changes(model, groups, out, ~bad, batch_size):
            delta = newton_update(model, [i], model.g[[i]], model.W[[i]], model.share[i], "ns")
            out[i] = ad.eta(model.Z[[i]], ad.theta + delta)[0]
    if ad.is_classifier and not ad.keeps_outputs:  # as unlearn refuses: without its only row the model has other classes
        counts = np.bincount(model.y.astype(int), minlength=len(ad.classes_))
        alone = counts[model.y.astype(int)] == 1
        if alone.any():
            out[alone] = np.nan
            warnings.warn(f"classes {ad.classes_[counts == 1].tolist()} have a single training row: "
                          "without it the model would have other classes, so its leave-one-out "
                          "prediction is undefined (NaN)", InfluenceWarning, stacklevel=3)
    return out


def _support_changes(model, groups, out, ok, batch_size):
    """Rows whose support-restricted leave-one-out step violates the ℓ1 optimality conditions.

    With ``δη_i`` the step's output change, the parameter step is
    ``Δ_i = A (v_i + c_i J_iᵀ W_i δη_i)`` (from ``M_{-i} Δ = v_i``). A support coordinate
    that changes sign, or a zero coordinate ``j`` whose smooth gradient of the leave-one-out
    quadratic model ``|∇_j| = |(∇F − v_i + M Δ_i − c_i J_iᵀ W_i δη_i)_j|`` exceeds its
    threshold ``λ_j (1 − s_i)``, means that the support changes.
    """
    ad, pen, solver = model.adapter, model.adapter.penalty, model.solver
    lam = pen.l1 * pen.scale
    zero = ~solver.active
    theta = ad.theta
    moving = solver.active & (lam > 0)
    grad0 = model.data_grad + pen.smooth_gradient(theta)
    flagged = []
    for rows, A in groups:
        for sl in row_blocks(len(rows), batch_size):
            r = rows[sl]
            r = r[ok[r]]
            if not len(r):
                continue
            d_eta = out[r] - model.eta[r]
            held = model.c[r] * held_weights(model, r)
            pull = ad.gradients(model.Z[r], held[:, None] * np.einsum("bkl,bl->bk", model.W[r], d_eta))
            V = model.removal_gradients(r)
            step = (V + pull) @ A                        # Δ_i, rows (A is symmetric)
            crossed = (np.sign(theta + step) != np.sign(theta))[:, moving].any(axis=1)
            grad = grad0[zero] - V[:, zero] + step @ model.curvature[:, zero] - pull[:, zero]
            limit = lam[zero] * (1.0 - model.share[r, None])
            exceeds = (np.abs(grad) > limit * (1 + 1e-9)).any(axis=1)
            flagged.extend(r[crossed | exceeds])
    return flagged


def influence_factors(model, gradients):
    """``M⁻¹ ∇f`` for each row of ``gradients`` (m, p): shape (m, p)."""
    return model.solver.solve(np.atleast_2d(gradients).T).T


def scores_from_factors(model, factors, rows, batch_size):
    """``factorsᵀ v_i`` for training rows ``rows``: shape (m, len(rows)), in row blocks."""
    rows = np.asarray(rows)
    out = np.empty((factors.shape[0], len(rows)))
    for sl in row_blocks(len(rows), batch_size):
        V = model.removal_gradients(rows[sl], sparse=True)   # csr for a sparse linear model
        out[:, sl] = np.asarray(V @ factors.T).T
    return out
