"""Regression diagnostics and error estimates of the leave-one-out steps, for every estimator.

Notation as in :mod:`._model`: the fitted model minimises ``Σ c_i ℓ_i(θ) + π(θ)``; ``M``
is its curvature (Hessian or Fisher, penalty and damping included), ``W_i`` the output
curvature of row ``i`` of the same kind, ``J_i = ∂η_i/∂θ``.

**Diagnostics** (names and definitions of statsmodels' ``OLSInfluence`` / ``GLMInfluence``):

* leverage ``h_i = tr(c_i W_i J_i M⁻¹ J_iᵀ)``: the hat diagonal of a linear model, the
  generalised (weighted) hat diagonal of a GLM; with a penalty the penalised curvature is
  used, so ``Σ h_i`` is the effective degrees of freedom; for a network the Gauss–Newton
  (or Hessian) curvature, for ``K`` outputs the trace of the ``K × K`` block;
* Pearson residuals ``r_i = −g_i / √W^F_i · √(c_i / c̄)`` (``g_i = ∂ℓ_i/∂η``, ``W^F`` the
  Fisher): ``(y − μ)/√V(μ)`` for any link, with the row's relative weight; for ``K``
  outputs the square root of the Pearson χ² contribution ``g_iᵀ (W^F_i)⁺ g_i``;
* dispersion ``φ̂ = Σ r_i² / (n − Σ h_i)`` for families with one (Gaussian, Gamma,
  Tweedie), 1 otherwise;
* internally studentized residuals ``r_i / √(φ̂ (1 − h_i))``; for ``K`` outputs (where
  ``h_i`` is a trace and may exceed 1) ``√(s_iᵀ Q_i⁺ s_i / (c̄ φ̂))`` with the score
  ``s_i = c_i g_i`` and its variance left after the fit ``Q_i = C_i − C_i G_i C_i``
  (``C_i = c_i W_i``, ``G_i = J_i M⁻¹ J_iᵀ``), which is the former for ``K = 1``;
* externally studentized residuals as R's ``rstudent`` (for least squares statsmodels'
  too): ``sign(r_i) √(d_i² + h_i r_i²/(1 − h_i)) / σ̂_(i)`` with ``d_i`` the deviance
  residual and ``σ̂²_(i) = (Σ d_j² − d_i²/(1 − h_i)) / (n − Σh − 1)`` the leave-one-out
  dispersion (1 for Bernoulli, Poisson, multinomial);
* parameter changes ``Δθ_i``: the Newton step of removing row ``i`` with the
  leave-one-out curvature (exact for least squares), for every row at once;
* Cook's distance ``r_i² h_i / (k (1 − h_i))`` with the studentized ``r_i`` and ``k``
  identifiable parameters (``= Δθ_iᵀ M Δθ_i / (k φ̂ c̄)``, the form used for ``K``
  outputs);
* DFFITS ``r_i √(h_i / (1 − h_i))`` (external, and internal; for ``K`` outputs
  ``√(k D_i)`` times the ratio of the residuals) and DFBETAS ``−Δθ_i / se`` with
  ``se_j = √(φ c̄ (M⁻¹)_jj)``, ``φ`` the leave-one-out ``σ̂²_(i)`` for least squares
  (statsmodels' OLS) and ``φ̂`` otherwise (statsmodels' GLM).

**Error estimates** of the one-step (NS) leave-one-out answers: after the step
``θ₁ = θ̂ + Δθ_i`` the leave-one-out objective's gradient is (for a linear model,
exactly) ``∇L(θ̂) + Σ_{j≠i} c_j J_jᵀ ρ_j`` with ``ρ_j = g_j(η_j + J_jΔθ_i) − g_j − W_j J_jΔθ_i``
the remainder of each row's linearised gradient; the next Newton step
``e_i = M_{−i}⁻¹ ∇L_{−i}(θ₁)`` estimates the step's error (Newton converges quadratically,
so the second step is the first one's error to leading order). Computed for blocks of
rows ``i`` against all (or a sample of) rows ``j``.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd
from scipy import special

from .._utils import check_memory, row_blocks
from ..models.families import Gaussian, Tweedie
from . import _updates

__all__ = ["InfluenceDiagnostics", "DiagnosticsMixin", "loo_errors"]

#: rows ``j`` over which an error estimate sums at most (a uniform sample beyond)
ERROR_MAX_ROWS = 4096


def _has_dispersion(loss):
    loss = getattr(loss, "family", loss)
    return isinstance(loss, Gaussian) or (isinstance(loss, Tweedie) and loss.power != 1)


def _is_least_squares(model):
    loss = getattr(model.adapter.loss, "family", model.adapter.loss)
    return (isinstance(loss, (Gaussian, Tweedie)) and getattr(loss, "power", 0) == 0
            and loss.link.name == "identity" and not model.adapter.is_network)


def _right_apply(A, U):
    """``U A`` for rows ``U`` (b, p): ``A`` a dense inverse or an inverse operator."""
    return U @ A if isinstance(A, np.ndarray) else A.__rmatmul__(U)


def _take(r):
    """Row positions ``r`` as a slice where they are consecutive (views instead of copies)."""
    return slice(r[0], r[-1] + 1) if len(r) and r[-1] - r[0] + 1 == len(r) else r


def _output_changes(model, r, G, t):
    """``δη_i = (I − c_i G_i W_i)⁻¹ t_i`` for rows ``r`` (the Woodbury step in output space),
    and which rows' leave-one-out curvature is singular (their ``δη`` is meaningless)."""
    t_ = _take(r)
    if G.shape[1] == 1:    # one output: scalars
        D = (1.0 - model.c[t_] * G[:, 0, 0] * model.W[t_, 0, 0])[:, None, None]
    else:
        D = np.eye(G.shape[1]) - model.c[t_, None, None] * G @ model.W[t_]
    det = D[:, 0, 0] if D.shape[1] == 1 else np.linalg.det(D)
    sing = np.abs(det) < 1e-10
    D[sing] = np.eye(D.shape[1])
    return _updates._batched_solve(D, t), sing


def _woodbury_rows(model, A, r, G, X):
    """Rows ``M_{−i}⁻¹ x_i`` for rows ``i = r`` and right-hand sides ``X`` (b, p), where
    ``M_{−i} = B − c_i J_iᵀ W_i J_i``, ``A = B⁻¹`` and ``G_i = J_i A J_iᵀ``:
    ``A (x_i + c_i J_iᵀ W_i δη_i)`` with ``δη_i`` from ``t_i = J_i A x_i``; NaN where
    ``M_{−i}`` is singular."""
    ad = model.adapter
    AX = _right_apply(A, X)
    d_eta, sing = _output_changes(model, r, G, np.einsum("bkp,bp->bk", ad.jacobians(model.Z[r]), AX))
    pull = ad.gradients(model.Z[r], model.c[r, None] * np.einsum("bkl,bl->bk", model.W[r], d_eta))
    out = AX + _right_apply(A, pull)
    out[sing] = np.nan
    return out


def _steps(model, A, r, G, q):
    """NS leave-one-out steps of rows ``r`` (:func:`_woodbury_rows` of ``v_i``) from their
    IJ output changes ``q_i = J_i A v_i``: as ``v_i = J_iᵀ c_i g_i + s_i ∇π``,
    ``v_i + c_i J_iᵀ W_i δη_i = J_iᵀ c_i (g_i + W_i δη_i) + s_i ∇π``, one product with ``A``
    per block."""
    d_eta, sing = _output_changes(model, r, G, q)
    t = _take(r)
    W = model.W[t]
    pull = W[:, :, 0] * d_eta if W.shape[1] == 1 else np.einsum("bkl,bl->bk", W, d_eta)
    u = model.c[t, None] * (model.g[t] + pull)
    out = _right_apply(A, model.adapter.gradients(model.Z[t], u))
    if model.share[t].any():
        out += model.share[t, None] * _right_apply(A, model.pen_grad[None, :])
    out[sing] = np.nan
    return out


def _leverage_block(model, r, G):
    """``h_i`` and, for several outputs, ``s_iᵀ Q_i⁺ s_i`` of rows ``r`` (see :func:`_leverages`)."""
    r = _take(r)
    C = model.c[r, None, None] * model.W[r]
    h = np.einsum("bkl,blk->b", C, G)
    if C.shape[1] == 1:
        return h, np.zeros(len(h))
    s = model.c[r, None] * model.g[r]
    return h, np.einsum("bk,bkl,bl->b", s, np.linalg.pinv(C - C @ G @ C, hermitian=True), s)


def _leverages(model, batch_size):
    """``h_i = tr(c_i W_i J_i M⁻¹ J_iᵀ)`` with the full curvature ``M``, and the squared
    studentized scores ``s_iᵀ Q_i⁺ s_i`` (``s_i = c_i g_i``, ``Q_i = C_i − C_i G_i C_i``,
    ``C_i = c_i W_i``: the score's variance left after the fit), which for one output
    are ``c_i g_i² / (W_i (1 − h_i))``."""
    A = _updates._inverse(model, model.solver)
    h, score2 = np.empty(model.n), np.empty(model.n)
    for r, G, _ in _updates._loo_quadratics(model, np.arange(model.n), A, batch_size):
        h[r], score2[r] = _leverage_block(model, r, G)
    return h, score2


def _shifted(model):
    """Whether leave-one-out steps start from ``M − s_i ∇²π`` rather than ``M``."""
    return bool(model.adapter.penalty.hessian_diagonal().any() and model.share.any()
                and model.solver.can_shift)


def parameter_changes(model, batch_size, rows=None, leverages=False):
    """``Δθ_i`` (NS leave-one-out parameter steps) of ``rows`` (all), shape (len(rows), p);
    with ``leverages`` (all rows) also :func:`_leverages`' pair, from the same pass where
    the steps start from ``M``."""
    n, p = model.n, model.adapter.n_params
    rows = np.arange(n) if rows is None else np.asarray(rows)
    check_memory((len(rows), p), "the parameter changes of every row",
                 "ask for fewer rows (diagnostics(params=False) skips them)")
    pos = np.full(n, -1)
    pos[rows] = np.arange(len(rows))
    out = np.empty((len(rows), p))
    shared = leverages and not _shifted(model)
    h, score2 = (np.empty(n), np.empty(n)) if shared else (None, None)
    for group, A in _updates._inverses(model, "ns"):
        for r, G, q in _updates._loo_quadratics(model, group[pos[group] >= 0], A, batch_size):
            out[pos[r]] = _steps(model, A, r, G, q)
            if shared:
                h[r], score2[r] = _leverage_block(model, r, G)
    if leverages and not shared:
        h, score2 = _leverages(model, batch_size)
    if not model.adapter.penalty.is_smooth:   # support changes: the exact proximal step
        ad = model.adapter
        eta, ok = model.eta.copy(), np.zeros(n, bool)
        for sl in row_blocks(len(rows), batch_size):
            r = rows[sl]
            ok[r] = np.isfinite(out[sl]).all(axis=1)
            eta[r] += np.einsum("bkp,bp->bk", ad.jacobians(model.Z[r]), np.nan_to_num(out[sl]))
        groups = _updates._inverses(model, "ns")
        for i in _updates._support_changes(model, groups, eta, ok, batch_size):
            out[pos[i]] = _updates.newton_update(model, [i], model.g[[i]], model.W[[i]],
                                                 model.share[i], "ns")
    return (out, h, score2) if leverages else out


# ------------------------------------------------------------------ diagnostics
class InfluenceDiagnostics:
    """Regression diagnostics of a fitted influence estimator (see :meth:`diagnostics`).

    Attributes follow statsmodels' ``OLSInfluence`` / ``GLMInfluence``; every array has
    one entry (row) per training row.

    Parameters
    ----------
    **values : dict
        The attributes below (set by :meth:`~skinfluence.HessianInfluence.diagnostics`).

    Attributes
    ----------
    hat_matrix_diag : ndarray of shape (n,)
        Leverages ``h_i`` (the trace of the row's block for several outputs).
    resid_pearson : ndarray of shape (n,)
        Pearson residuals (not divided by the dispersion).
    scale : float
        The dispersion ``φ̂`` (1 for Bernoulli, Poisson and multinomial models).
    resid_studentized : ndarray of shape (n,)
        Internally studentized residuals (alias ``resid_studentized_internal``).
    resid_studentized_external : ndarray of shape (n,)
        Externally studentized (deletion) residuals.
    cooks_d : ndarray of shape (n,)
        Cook's distances.
    cooks_distance : tuple of (ndarray, ndarray)
        Cook's distances and their F(k, n − Σh) p-values (as statsmodels).
    dffits, dffits_internal : tuple of (ndarray, float)
        DFFITS with external (internal) residuals, and the threshold ``2 √(k/n)``.
    d_params : ndarray of shape (n, p) or None
        ``θ̂ − θ̂_(i)``: parameters minus their one-step leave-one-out value (statsmodels'
        sign), in the estimator's parameter order (``param_names``).
    params_one : ndarray of shape (n, p) or None
        One-step leave-one-out parameters ``θ̂ − d_params``.
    dfbetas : ndarray of shape (n, p) or None
        ``d_params`` over the parameters' standard errors.
    bse : ndarray of shape (p,) or None
        Standard errors ``√(φ c̄ (M⁻¹)_jj)``.
    params : ndarray of shape (p,)
    param_names : list of str
    k_vars : int
        Number of (identifiable) parameters ``k``.
    nobs : int
    df_resid : float
        ``n − Σ h_i``.
    """

    def __init__(self, **values):
        self.__dict__.update(values)

    @property
    def cooks_distance(self):
        """Cook's distances and their F(k, n − Σh) p-values (statsmodels' pair; the
        p-values are computed on first access).

        Returns
        -------
        tuple of (ndarray of shape (n,), ndarray of shape (n,))
        """
        if "_cooks_pvalues" not in self.__dict__:
            self._cooks_pvalues = special.fdtrc(self.k_vars, self.df_resid, self.cooks_d)
        return self.cooks_d, self._cooks_pvalues

    @property
    def params_one(self):
        """One-step leave-one-out parameters ``θ̂ − d_params`` (None without ``d_params``).

        Returns
        -------
        ndarray of shape (n, p) or None
        """
        return None if self.d_params is None else self.params - self.d_params

    @property
    def resid_studentized_internal(self):
        """Internally studentized residuals (``resid_studentized``, statsmodels' OLS name).

        Returns
        -------
        ndarray of shape (n,)
        """
        return self.resid_studentized

    def summary_frame(self) -> pd.DataFrame:
        """The diagnostics as a DataFrame indexed like the training rows.

        Columns ``dfb_<param>`` (when the parameter changes were computed), ``cooks_d``,
        ``standard_resid``, ``hat_diag``, ``dffits_internal``, ``student_resid`` and
        ``dffits`` (statsmodels' ``OLSInfluence.summary_frame`` names).

        Returns
        -------
        DataFrame of shape (n, p + 6) or (n, 6)
        """
        columns = ["cooks_d", "standard_resid", "hat_diag", "dffits_internal", "student_resid",
                   "dffits"]
        values = [self.cooks_d, self.resid_studentized, self.hat_matrix_diag,
                  self.dffits_internal[0], self.resid_studentized_external, self.dffits[0]]
        if self.dfbetas is not None:
            columns = [f"dfb_{name}" for name in self.param_names] + columns
            values = [self.dfbetas] + [v[:, None] for v in values]
        data = np.hstack(values) if self.dfbetas is not None else np.column_stack(values)
        return pd.DataFrame(data, index=self.index, columns=columns, copy=False)


def _inverse_diagonal(model):
    """``diag(M⁻¹)``: from the dense inverse, or from solves of blocks of unit vectors."""
    A = _updates._inverse(model, model.solver)
    if isinstance(A, np.ndarray):
        return np.diag(A).copy()
    p = model.adapter.n_params
    out = np.empty(p)
    for sl in row_blocks(p, 256):
        E = np.zeros((p, sl.stop - sl.start))
        E[np.arange(sl.start, sl.stop), np.arange(sl.stop - sl.start)] = 1.0
        out[sl] = model.solver.solve(E)[np.arange(sl.start, sl.stop), np.arange(sl.stop - sl.start)]
    return out


def _param_names(inf):
    """``dfb_`` column names: the design's features (a Pipeline's transformed ones where it
    names them), ``const`` for the intercept, ``[class]`` per output; ``theta<j>`` for a
    network."""
    ad = inf.adapter_
    if not ad.has_gram:
        return [f"theta{j}" for j in range(ad.n_params)]
    glm = getattr(ad, "inner", ad)                  # a Pipeline's final linear model
    est = inf.estimator_
    try:
        names = (est[:-1].get_feature_names_out() if hasattr(est, "steps")
                 else getattr(inf, "feature_names_in_", None))
    except (AttributeError, ValueError, TypeError):   # a step that does not name its output
        names = None
    if names is None or len(names) != glm.n_features:
        names = [f"x{j}" for j in range(glm.n_features)]
    features = [str(f) for f in names] + (["const"] if glm.fit_intercept else [])
    K = ad.n_outputs
    if K == 1:
        return features
    return [f"{f}[{cls}]" for f in features for cls in ad.classes_]


def compute_diagnostics(inf, params=True):
    model = inf._fitted()
    ad, n, K = model.adapter, model.n, model.adapter.n_outputs
    bs = inf._rows_per_block()
    if params or K > 1:
        delta, h, score2 = parameter_changes(model, bs, leverages=True)
    else:
        h, score2 = _leverages(model, bs)
    base = getattr(ad.loss, "family", ad.loss)
    Wf = base.curvature(model.y, model.eta, "fisher")
    rel = model.c / model.c.mean()
    g = model.g
    if K == 1:
        pearson = -g[:, 0] / np.sqrt(Wf[:, 0, 0]) * np.sqrt(rel)
        sign = np.sign(pearson)
    else:
        chi2 = np.einsum("nk,nkl,nl->n", g, np.linalg.pinv(Wf, hermitian=True), g)
        pearson = np.sqrt(np.maximum(chi2, 0.0) * rel)
        sign = np.ones(n)
    deviance = sign * np.sqrt(np.maximum(2 * base.loss(model.y, model.eta), 0.0) * rel)
    null = ad.null_space()
    k = ad.n_params - (0 if null is None else null.shape[1])
    df_resid = n - h.sum()
    dispersion = _has_dispersion(base)
    phi = float(pearson @ pearson / df_resid) if dispersion else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        one_minus = 1.0 - h
        # r_P² / (1 − h), and for several outputs its generalisation s_iᵀ Q_i⁺ s_i / c̄
        press2 = pearson**2 / one_minus if K == 1 else score2 / model.c.mean()
        internal = sign * np.sqrt(press2 / phi)
        if dispersion:
            sigma2_i = (deviance @ deviance - deviance**2 / one_minus) / (df_resid - 1)
        else:
            sigma2_i = np.ones(n)
        external = sign * np.sqrt(np.maximum(deviance**2 + press2 - pearson**2, 0.0)
                                  / sigma2_i)
        factor = np.sqrt(h / one_minus)
    threshold = 2 * np.sqrt(k / n)
    d_params = dfbetas = bse = None
    cooks = internal**2 * h / (k * one_minus)
    if params or K > 1:
        if K > 1:   # Δθᵀ M Δθ / (k φ c̄), M Δθ = v + c Jᵀ W J Δθ (the step's own equation)
            quad = np.empty(n)
            for sl in row_blocks(n, bs):
                V = model.removal_gradients(np.arange(n)[sl])
                dn = np.einsum("bkp,bp->bk", ad.jacobians(model.Z[sl]), delta[sl])
                pull = np.einsum("bkl,bl->bk", model.c[sl, None, None] * model.W[sl], dn)
                quad[sl] = np.einsum("bp,bp->b", V, delta[sl]) + np.einsum("bk,bk->b", pull, dn)
            cooks = quad / (k * phi * model.c.mean())
            factor = np.sqrt(k * cooks) / internal   # DFFITS² = k · Cook's distance, as for one output
        if params:
            delta *= -1.0                     # statsmodels' sign: θ̂ − θ̂_(i)
            d_params = delta
            bse = np.sqrt(np.maximum(_inverse_diagonal(model), 0.0) * model.c.mean() * phi)
            scale = (bse / np.sqrt(phi))[None, :] * np.sqrt(sigma2_i)[:, None] \
                if _is_least_squares(model) else bse[None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                dfbetas = d_params / scale
    return InfluenceDiagnostics(
        hat_matrix_diag=h, resid_pearson=pearson, resid_deviance=deviance, scale=phi,
        resid_studentized=internal, resid_studentized_external=external,
        sigma2_not_obsi=sigma2_i,
        cooks_d=cooks, dffits=(external * factor, threshold),
        dffits_internal=(internal * factor, threshold), d_params=d_params,
        dfbetas=dfbetas, bse=bse, params=ad.theta.copy(),
        param_names=_param_names(inf), k_vars=k, nobs=n, df_resid=df_resid,
        index=inf._train_labels())


# ---------------------------------------------------------------- error estimates
def _step_blocks(model, batch_size, rows):
    """``(A, r, G, Δθ_r)`` per block of ``rows``: the NS leave-one-out steps block by block
    (memory ``O(block · p)``; with an ℓ1 penalty all at once, for the support changes)."""
    pos = np.full(model.n, -1)
    pos[rows] = np.arange(len(rows))
    every = None if model.adapter.penalty.is_smooth else parameter_changes(model, batch_size, rows)
    for group, A in _updates._inverses(model, "ns"):
        for r, G, q in _updates._loo_quadratics(model, group[pos[group] >= 0], A, batch_size):
            yield A, r, G, (_steps(model, A, r, G, q) if every is None else every[pos[r]])


def loo_errors(model, batch_size, rows=None, max_rows=ERROR_MAX_ROWS, random_state=0):
    """Estimated errors of the NS leave-one-out steps of ``rows`` (all).

    Returns ``(param_error, output_error)``: ``‖e_i‖`` and the error of the leave-one-out
    output ``‖J_i e_i‖`` (in η units). For a linear model ``η_j(θ̂ + Δθ_i)`` of every ``j``
    is one product for a block of rows ``i``; a network takes one forward and one backward
    pass per row ``i``.
    """
    ad, n, p = model.adapter, model.n, model.adapter.n_params
    rows = np.arange(n) if rows is None else np.asarray(rows)
    K = ad.n_outputs
    # the rows j the gradient sums over: all, or a uniform sample weighted n/m
    if n > max_rows:
        sample = np.sort(np.random.default_rng(random_state).choice(n, max_rows, replace=False))
        weight = n / max_rows
    else:
        sample, weight = np.arange(n), 1.0
    pos = np.full(n, -1)
    pos[rows] = np.arange(len(rows))
    blocks = _step_blocks(model, batch_size, rows)
    if not ad.has_gram:
        return _network_errors(model, blocks, pos, len(rows), sample, weight)
    Zs, ys, etas = model.Z[sample], model.y[sample], model.eta[sample]
    gs, Ws, cs = model.g[sample], model.W[sample], model.c[sample] * weight
    in_sample = np.full(n, -1)
    in_sample[sample] = np.arange(len(sample))
    residual = model.data_grad + model.pen_grad        # ∇L(θ̂): the fit's own error
    m = len(sample)
    per_block = max(1, min(batch_size, 2**22 // max(m * K * max(K, 2), 1)))
    param_err = np.empty(len(rows))
    out_err = np.empty(len(rows))
    for A, r_keep, G, steps in blocks:
        for sl in row_blocks(len(r_keep), per_block):
            rb, Gb, D = r_keep[sl], G[sl], steps[sl]                  # D: (b, p)
            b = len(rb)
            d = np.asarray(Zs @ D.reshape(b, -1, K).transpose(1, 0, 2).reshape(-1, b * K))
            d = d.reshape(m, b, K)                                    # J_j Δθ_i
            g_new = ad.loss.gradient(np.repeat(ys, b), (etas[:, None, :] + d).reshape(m * b, K))
            rho = g_new.reshape(m, b, K) - gs[:, None, :] - np.einsum("mkl,mbl->mbk", Ws, d)
            rho *= cs[:, None, None]
            own = in_sample[rb]                                       # row i itself: not in L_{-i}
            hit = own >= 0
            rho[own[hit], np.flatnonzero(hit)] = 0.0
            R = np.asarray(Zs.T @ rho.reshape(m, b * K))              # (q, b·K)
            R = R.reshape(-1, b, K).transpose(1, 0, 2).reshape(b, p)
            grad = np.nan_to_num(R + residual[None, :])
            e = _woodbury_rows(model, A, rb, Gb, grad)
            param_err[pos[rb]] = np.linalg.norm(e, axis=1)
            Je = np.einsum("bkp,bp->bk", ad.jacobians(model.Z[rb]), e)
            out_err[pos[rb]] = np.linalg.norm(Je, axis=1)
    return param_err, out_err


def _network_errors(model, blocks, pos, n_rows, sample, weight):
    """:func:`loo_errors` of a non-linear model: per row, the leave-one-out objective's
    gradient at ``θ̂ + Δθ_i`` from one forward and one backward pass over the (sampled) rows."""
    ad, n = model.adapter, model.n
    Zs, ys, cs = model.Z[sample], model.y[sample], model.c[sample] * weight
    in_sample = np.full(n, -1)
    in_sample[sample] = np.arange(len(sample))
    param_err, out_err = np.full(n_rows, np.nan), np.full(n_rows, np.nan)
    for A, r, G, steps in blocks:
        grads = np.zeros((len(r), ad.n_params))
        for k, i in enumerate(r):
            if not np.isfinite(steps[k]).all():
                continue
            theta = ad.theta + steps[k]
            G1 = cs[:, None] * ad.loss.gradient(ys, ad.eta(Zs, theta))
            if in_sample[i] >= 0:
                G1[in_sample[i]] = 0.0
            grads[k] = (ad.total_gradient(Zs, G1, theta)
                        + (1.0 - model.share[i]) * ad.penalty.gradient(theta))
        e = _woodbury_rows(model, A, r, G, grads)
        param_err[pos[r]] = np.linalg.norm(e, axis=1)
        Je = np.einsum("bkp,bp->bk", ad.jacobians(model.Z[r]), e)
        out_err[pos[r]] = np.linalg.norm(Je, axis=1)
    return param_err, out_err


class DiagnosticsMixin:
    """Mixin of :class:`~skinfluence.BaseInfluence`: :meth:`diagnostics`."""

    def _rows_per_block(self):
        from ._streaming import training_rows_per_block
        return training_rows_per_block(self)

    def diagnostics(self, *, params=True) -> InfluenceDiagnostics:
        """Regression diagnostics of every training row: leverage, studentized residuals,
        Cook's distance, DFFITS, DFBETAS and the one-step leave-one-out parameters.

        Names and definitions follow statsmodels' ``OLSInfluence`` (least squares) and
        ``GLMInfluence`` (GLMs), and extend to penalties (the penalised curvature),
        several outputs (traces of the rows' blocks) and networks (their Gauss–Newton
        or Hessian curvature, as the estimator's); see the user guide's *Diagnostics*.
        Everything is computed for blocks of rows from one factorisation, within
        ``memory_budget``.

        Parameters
        ----------
        params : bool, default=True
            Also compute the ``n × p`` parameter changes (``d_params``, ``params_one``,
            ``dfbetas``); False skips them (leverages, residuals, Cook's distance and
            DFFITS need none for one output).

        Returns
        -------
        InfluenceDiagnostics
            With ``hat_matrix_diag``, ``resid_studentized``,
            ``resid_studentized_external``, ``cooks_distance``, ``dffits``,
            ``dffits_internal``, ``dfbetas``, ``d_params``, ``params_one`` and
            ``summary_frame()``.

        Examples
        --------
        >>> from sklearn.datasets import load_diabetes
        >>> from sklearn.linear_model import LinearRegression
        >>> from skinfluence import HessianInfluence
        >>> X, y = load_diabetes(return_X_y=True, as_frame=True)
        >>> diag = HessianInfluence(LinearRegression()).fit(X, y).diagnostics()
        >>> frame = diag.summary_frame()
        >>> list(frame.columns[-6:])
        ['cooks_d', 'standard_resid', 'hat_diag', 'dffits_internal', 'student_resid', 'dffits']
        >>> round(float(diag.hat_matrix_diag.sum()), 6)   # the number of parameters
        11.0
        """
        self._fitted()
        return compute_diagnostics(self, params=params)

    def _loo_refine(self, eta, method, refine):
        """``(η, error)``: leave-one-out outputs ``eta`` with their estimated errors, the
        ``refine`` rows of largest error converged exactly (``loo_info_`` records all)."""
        model = self._fitted()
        ad, n = self.adapter_, self.n_samples_
        k = _refine_count(refine, n)
        bs = self._rows_per_block()
        param_error, error = loo_errors(model, bs, random_state=0)
        if method == "ij":
            error = error + np.linalg.norm(eta - _updates.loo_decision(model, "ns", bs), axis=1)
        error = np.where(np.isfinite(eta).all(axis=1), error, np.nan)
        refined = np.empty(0, int)
        if k:
            order = np.argsort(-np.nan_to_num(error, nan=-np.inf), kind="stable")
            refined = np.sort(order[:k][np.isfinite(error[order[:k]])])
            info = getattr(self, "update_info_", None)
            eta = eta.copy()
            for i in refined:
                delta = self.parameter_change([i], method="ns", steps="converge")
                eta[i] = ad.eta(model.Z[[i]], ad.theta + delta)[0]
                param_error[i] = self.update_info_["error_estimate"]
                error[i] = param_error[i] * np.linalg.norm(ad.jacobians(model.Z[[i]])[0], 2)
            if info is None:
                del self.update_info_
            else:
                self.update_info_ = info
        self.loo_info_ = {"error": error, "param_error": param_error, "refined": refined}
        return eta, error


def _refine_count(refine, n):
    """Rows to refine: an int count, or a float fraction in (0, 1)."""
    if refine is None or refine is False:
        return 0
    if isinstance(refine, Integral) and not isinstance(refine, bool) and 0 <= refine <= n:
        return int(refine)
    if isinstance(refine, Real) and not isinstance(refine, Integral) and 0 < refine < 1:
        return int(np.ceil(refine * n))
    raise ValueError(f"refine must be a number of rows from 0 to {n} or a fraction in (0, 1), "
                     f"got {refine!r}")
