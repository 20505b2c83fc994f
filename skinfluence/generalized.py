"""Generalized influence functions (GIF, Lyu et al.) as an influence estimator.

:class:`GeneralizedInfluence` is an influence estimator whose solver moves only a
subset ``J`` of the parameters, chosen by a selection rule (:mod:`skinfluence.selection`)
on the rows that the queries will examine. Every query of the shared API (``unlearn``,
``relabel``, ``parameter_change``, ``attribute``, ...) goes through that solver, so all of
them are restricted to ``J``. It follows the recipe for a new estimator (``docs/architecture.rst``): one hook,
:meth:`GeneralizedInfluence._choose_solver`, called once per fit, selects ``J`` and returns
the registered solver (``"gif"`` / ``"gif_exact"``) with its options; the engine builds and
rebuilds that solver at every θ with the same ``J``. The maths and the baselines (Freezing, Projecting, the full
influence function, second-order group influence) are in :mod:`skinfluence.curvature.gif`.
"""

from __future__ import annotations

from numbers import Integral, Real

import warnings

import numpy as np

from ._sklearn_compat import Interval, StrOptions, _safe_indexing
from .curvature.gif import METHODS, STRATEGIES
from .curvature.solvers import check_solver_options
from .estimators import BaseInfluence, SolverChoice, influence_init
from .selection import RULES, select_parameters

__all__ = ["GeneralizedInfluence"]


class GeneralizedInfluence(BaseInfluence):
    """Influence restricted to a selected share of the parameters (GIF).

    The influence of a change ``g`` (the removed rows' gradient, or the difference of
    gradients of a relabelling) on the selected parameters ``J`` is the least-squares
    solution of ``H_J Δ_J ≈ g`` (``H_J``: the columns of the curvature for ``J``), i.e.
    ``H_Jᵀ H_J Δ_J = H_Jᵀ g``; with ``J`` = all parameters it is the ordinary influence
    function. The other parameters do not move.

    Parameters
    ----------
    estimator : estimator object
        A skorch net or :class:`~skinfluence.models.torch.TorchModel` (``prefit=True``), or
        a supported linear model (``J`` is then a subset of its coefficients).
    selection : str or callable, default="highest_outputs"
        ``"highest_outputs"``, ``"lowest_outputs"``, ``"highest_gradients"``,
        ``"lowest_gradients"``, ``"random"``, or ``selection(adapter, X, y) -> mask``.
        Rules rank units by their mean output or loss gradient on the rows passed to
        :meth:`fit` as ``selection_rows`` (the rows to unlearn; default all rows). The
        ranking rules are deterministic (the unit filled partly takes its largest
        weights): ``J`` is the same at every fit; ``random_state`` seeds ``"random"``.
    ratio : float in (0, 1], default=0.05
        Share of each layer's parameters in ``J``.
    curvature : {"hessian", "fisher"}, default="hessian"
        The Hessian (as in the paper) or the Fisher / Gauss–Newton matrix (AFIF's
        curvature; positive semi-definite).
    method : {"lanczos", "lissa", "exact"}, default="lanczos"
        How the truncated least squares is solved. ``"lissa"``: the authors' modified
        LiSSA, ``max_iter`` steps at the normaliser it ends with; a restart (which raises
        the normaliser ``c``) makes the same steps invert less (only ``σ² ≳ c²/max_iter``),
        so its result depends on how often it diverged. ``"lanczos"``: the limit of those
        steps counted in units of ``c`` (``max_iter·c²/normalizer²`` of them), the gradient
        flow ``(1 − exp(−T·AᵀA))(AᵀA)⁻¹ Aᵀg`` with ``T = max_iter / normalizer²``, by Lanczos:
        LiSSA's own result wherever it runs at ``c = normalizer``, the same regulariser
        whatever the curvature's scale, no restart, and ``√``-fewer products (see
        :func:`~skinfluence.curvature.gif.gif_flow`). ``"exact"``: the least squares on the
        dense curvature (where ``p × p`` fits). The curvature products are matrix-free,
        except when a solve has many right-hand sides (e.g. :meth:`attribute` on many test
        points) and ``p × p`` fits in 512 MiB: the dense curvature is then built once and
        multiplies instead.
    strategy : {"gif", "freezing", "projecting", "full", "second_order"}, default="gif"
        GIF, or one of the baselines on the same ``J`` (see
        :mod:`skinfluence.curvature.gif`).
    max_iter : int, default=1000
        The truncation: LiSSA steps at normaliser ``normalizer`` (for ``"lanczos"``, the
        horizon ``T = max_iter / normalizer²`` they stand for). Stopping there is a
        regulariser (documented), not an error: it inverts the directions of
        ``σ² ≳ normalizer² / max_iter`` and damps the others. Measured on digits (class
        removal, ``benchmarks/RESULTS_gif.md``), 100 steps at ``c = 1`` damped too much
        (GIF 10% F1 0.93 on a CNN, 0.89 on an MLP) and 1000 did not (0.97–0.98).
    tol : float, default=1e-9
        LiSSA stops when ``‖ΔI‖ < tol·√|J|``; Lanczos when a step changes the solution by
        less than ``tol`` relative.
    normalizer : float or "auto", default=1.0
        LiSSA's initial normaliser ``c`` (the curvature is divided by it; the authors start
        at 1). ``"auto"``: the curvature's largest eigenvalue (power iteration), for
        models whose curvature is far from unit scale (e.g. unscaled linear models).
    normalizer_step : float, default=5.0
        ``"lissa"``: added to ``c`` each time the iteration diverges and restarts (after 10
        restarts ``c`` doubles instead: an unscaled model far from unit scale still converges).
    solver : {"auto", "gif", "gif_exact"}, default="auto"
        The registered solver: ``"auto"`` is ``"gif"`` (Lanczos or LiSSA) or
        ``"gif_exact"`` by ``method``. ``"lissa"`` and ``"exact"`` (GIF's method, before ``method`` had its own
        name) still work, with a FutureWarning.
    solver_options : dict, default=None
        Further options of :class:`~skinfluence.curvature.gif.GIFSolver` (``max_restarts``,
        ``max_krylov``);
        those that are parameters here (``max_iter``, ``tol``, ``strategy``, ...) raise.
    damping, prefit, polish, polish_options, removal_size, curvature_sampler, device, dtype, batch_size
        As for :class:`~skinfluence.HessianInfluence`.
    memory_budget, n_jobs, random_state, verbose
        As for :class:`~skinfluence.HessianInfluence`.

    Attributes
    ----------
    parameter_mask_ : ndarray of bool, shape (n_params,)
        The selected parameters ``J``.
    selection_table_ : pandas.DataFrame
        Per layer: its size, the number selected, the whole units taken and the unit
        filled partly.
    n_iter_, n_restarts_, normalizer_, residual_ :
        The last solve's LiSSA steps, restarts, final normaliser and relative
        normal-equation residual (``method="lanczos"``: Lanczos steps, 0, ``normalizer``
        and the last relative change; ``method="exact"``: 1, 0, 1 and the residual).
    Other attributes as for :class:`~skinfluence.HessianInfluence`.

    Notes
    -----
    GIF is built to remove a given group of rows. For attribution, where each row's
    removal is asked in turn, ``benchmarks/attribution_quality.py`` measured on digits
    (linear datamodeling score against 50 models retrained on random halves): LiSSA
    (``method="lissa"``) truncated at 200 steps (the default before 1000) keeps little of the signal (logistic regression 0.34 at
    ``ratio=0.05``, 0.42 at 0.3; MLP 0.18 / 0.30), the exact least squares more (0.38 /
    0.81; MLP 0.53 / 0.81), the full influence function most (0.94; MLP 0.86). Use
    ``method="exact"`` where ``p × p`` fits, or :class:`~skinfluence.HessianInfluence`.

    ``J`` is selected once per :meth:`fit`, on the fitted model (before any polishing:
    polishing's Newton steps already move only ``J``).

    Examples
    --------
    >>> gif = GeneralizedInfluence(net, prefit=True, ratio=0.1)            # doctest: +SKIP
    >>> gif.fit(X, y, selection_rows=np.flatnonzero(y == 0))               # doctest: +SKIP
    >>> step = gif.parameter_change(np.flatnonzero(y == 0), method="ij")   # doctest: +SKIP
    """

    _parameter_constraints = {
        **BaseInfluence._parameter_constraints,
        "selection": [StrOptions(set(RULES)), callable],
        "ratio": [Interval(Real, 0, 1, closed="right")],
        "curvature": [StrOptions({"hessian", "fisher"})],
        "method": [StrOptions(set(METHODS))],
        "solver": [StrOptions({"auto", "gif", "gif_exact", "lissa", "exact"})],
        "strategy": [StrOptions(set(STRATEGIES))],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "normalizer": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "normalizer_step": [Interval(Real, 0, None, closed="neither")],
    }

    __init__ = influence_init(selection="highest_outputs", ratio=0.05, curvature="hessian",
                              method="lanczos", strategy="gif", max_iter=1000, tol=1e-9,
                              normalizer=1.0, normalizer_step=5.0)

    @property
    def _curvature_kind(self):
        return self.curvature

    def fit(self, X, y, sample_weight=None, *, selection_rows=None):
        """Fit (unless ``prefit``), select ``J`` and set up the solver.

        Parameters
        ----------
        X, y, sample_weight : as for :meth:`HessianInfluence.fit`
        selection_rows : array-like of int or bool, optional
            The rows on which the selection rule ranks the units (the rows to unlearn or
            relabel, as in the paper); default all rows.

        Returns
        -------
        self : object
        """
        self._selection_data = (X, y)
        if selection_rows is not None:
            rows = np.asarray(selection_rows)
            rows = np.flatnonzero(rows) if rows.dtype == bool else rows
            if rows.size == 0 or not np.issubdtype(rows.dtype, np.integer):
                raise ValueError("selection_rows must be a non-empty array of row indices "
                                 "or a boolean mask")
            self._selection_data = (_safe_indexing(X, rows), _safe_indexing(np.asarray(y), rows))
        return super().fit(X, y, sample_weight)

    def _method(self):
        """GIF's method, from ``method`` or the deprecated ``solver="lissa"/"exact"``."""
        if self.solver in ("lissa", "exact"):
            warnings.warn(f"GeneralizedInfluence(solver={self.solver!r}) is deprecated: GIF's method "
                          f"is now method={self.solver!r} (solver names the registered solver, "
                          "'auto')", FutureWarning, stacklevel=4)
            return self.solver
        if self.solver == "gif_exact":
            return "exact"
        if self.solver == "gif":                     # the iterative solver: not the dense one
            return "lissa" if self.method == "exact" else self.method
        return self.method

    def _choose_solver(self, adapter):
        """The one solver hook: ``J`` selected once (on the fitted model) and the GIF solver
        restricted to it; ``parameter_mask_`` and ``selection_table_`` come with it."""
        if not adapter.penalty.is_smooth:
            raise ValueError("GeneralizedInfluence supports smooth penalties only (no ℓ1); "
                             "use HessianInfluence for Lasso / elastic net")
        method = self._method()
        name = "gif_exact" if method == "exact" else "gif"
        extra = check_solver_options(name, self.solver_options)
        clash = sorted(set(extra) & {"subset", "strategy", "method", "normalizer",
                                     "normalizer_step", "max_iter", "tol"})
        if clash:
            raise ValueError(f"solver_options {clash} are parameters of GeneralizedInfluence: "
                             "set them there")
        X_sel, y_sel = self._selection_data
        mask, table = select_parameters(adapter, X_sel, y_sel, rule=self.selection,
                                        ratio=self.ratio, random_state=self.random_state)
        if self.strategy == "full":
            mask = np.ones(adapter.n_params, bool)
        if not mask.any():
            raise ValueError(f"ratio={self.ratio} selects no parameter; increase it")
        own = dict(subset=mask, strategy=self.strategy, normalizer=self.normalizer,
                   normalizer_step=self.normalizer_step, max_iter=self.max_iter, tol=self.tol)
        if name == "gif":
            own["method"] = method
        return SolverChoice(name, f"GeneralizedInfluence(method={method!r}, strategy={self.strategy!r})",
                            {**own, **extra},
                            attributes={"parameter_mask_": mask, "selection_table_": table})

    # ------------------------------------------------------------- solver report
    def _info(self, key, default):
        self._fitted()
        return self.curvature_solver_.info_.get(key, default)

    @property
    def n_iter_(self):
        return self._info("n_iter", 0)

    @property
    def n_restarts_(self):
        return self._info("n_restarts", 0)

    @property
    def normalizer_(self):
        return self._info("normalizer", 1.0)

    @property
    def residual_(self):
        return self._info("residual", np.nan)
