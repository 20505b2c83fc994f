"""Adapter for neural networks: skorch nets and plain torch modules, via :mod:`torch.func`.

The natural-scale output ``η`` is what the network's loss reads as logits:

==========================================  ===========================  =============  ===========
model and criterion                         η                            family         loss factor
==========================================  ===========================  =============  ===========
NeuralNetClassifier + NLLLoss (default)     log(output + eps) (skorch)   Multinomial    1
NeuralNetClassifier + CrossEntropyLoss      the module's output          Multinomial    1
NeuralNetBinaryClassifier (BCEWithLogits)   the single output logit      Bernoulli      1
NeuralNetRegressor + MSELoss                the single output            Gaussian       2
==========================================  ===========================  =============  ===========

(MSELoss is ``(y − f)² = 2 · ½r²``.) A torch loss with ``reduction="mean"`` averages the
data term, so the objective is *mean-scaled*: ``c_i = factor · sw_i / Σ sw``. An
optimizer's (coupled) weight decay ``λ`` adds ``λ/2 ‖θ‖²`` on the parameters of its
group; decoupled decay (AdamW) has no objective and is refused. A plain module is
wrapped in :class:`TorchModel` with its loss and weight decay.

The parameter vector ``θ`` is every trainable parameter (``requires_grad``) flattened
in ``named_parameters`` order. The network is evaluated in ``eval`` mode (dropout off,
batch-norm statistics fixed) in ``dtype`` (by default the network's own: float32 for most)
on ``device``; results are numpy arrays.

Curvature (``Σ_i c_i J_iᵀ W_i J_i``, plus for the Hessian the second-derivative term
``Σ_i c_i Σ_k g_ik ∇²η_ik``) is built densely from per-sample output Jacobians
(vmapped ``jacrev``, memory bounded by chunking), which costs ``2 p² n r`` flops with
``r`` the rank of ``W_i`` (1 for two classes). The second-derivative term needs the ``p``
rows of the Hessian of ``ψ(θ) = Σ_i c_i g_iᵀ η_i(θ)`` (reverse-over-reverse: ``∇ψ`` pulled
back along unit vectors, vmapped over small blocks of rows and vectors); it is the
expensive part of a dense Hessian.
:meth:`TorchAdapter.curvature_matvec` gives the same curvature as a product, for the
iterative solvers.
"""

from __future__ import annotations

import copy
import functools
import inspect
import numbers
import threading
import weakref

import numpy as np
import torch
from sklearn.utils.validation import check_array
from torch.func import functional_call, grad, jacrev, jvp, vjp, vmap

from .._utils import row_blocks
from .base import ModelAdapter
from .families import Bernoulli, Gaussian, Multinomial
from .penalties import ElasticNetPenalty
from .torch_objective import TorchModel, objective_spec, resolve_device, resolve_dtype

__all__ = ["TorchModel", "TorchAdapter", "make_torch_adapter"]

_ELEMENTS = 2**24  # bound on the entries of one chunk's Jacobian / HVP block
# second-derivative term of a dense Hessian: rows per block and (row, unit vector) pairs per
# vmapped call (measured: 512 × 32 beats 2,000 × 131 by 2.5–3× on the Adult MLP)
_HESSIAN_ROWS, _HESSIAN_PAIRS = 512, 2**14
# models made by with_params remember the input shape and a few rows of their parent's data
_INPUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _EmpiricalFisher:
    """A family whose Fisher is the outer product of the observed-label gradients."""

    def __init__(self, family):
        self.family = family

    def __getattr__(self, name):
        if name == "family":
            raise AttributeError(name)
        return getattr(self.family, name)

    def curvature(self, y, eta, kind="hessian"):
        if kind != "fisher":
            return self.family.curvature(y, eta, kind)
        g = self.family.gradient(y, eta)
        return g[:, :, None] * g[:, None, :]


# --------------------------------------------------------------------------- adapter
class TorchAdapter(ModelAdapter):
    """Protocol implementation for a trained network (see the module docstring).

    Parameters
    ----------
    estimator : skorch net or TorchModel
    device : where the work runs
    dtype : {"auto", "float64", "float32"}
        Precision of the work; ``"auto"``: the network's own (float32 unless it is a
        float64 network).
    batch_size : int
        Samples per chunk (the Jacobian chunks are further bounded to ~16M entries).
    random_state : int, RandomState or None
        Seeds the labels drawn for ``fisher="mc"``.
    fisher : {"exact", "mc", "empirical"}
    _private : bool, default=False
        Internal (set by :meth:`moved`): the estimator is the adapter's own copy, whose
        module may be used as it is.
    """

    is_network = True
    has_kronecker = True

    def __init__(self, estimator, *, device="auto", dtype="auto", batch_size=4096,
                 random_state=None, fisher="exact", _private=False):
        if fisher not in ("exact", "mc", "empirical"):
            raise ValueError(f"fisher must be 'exact', 'mc' or 'empirical', got {fisher!r}")
        if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        spec = objective_spec(estimator)
        self.estimator = estimator
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, spec.module)
        self.batch_size = int(batch_size)
        self.random_state = random_state
        self.fisher = fisher
        self._output = spec.output
        # skorch's NLLLoss path trains on log(p + eps), eps of the module's own dtype
        self._log_eps = torch.finfo(next(spec.module.parameters()).dtype).eps \
            if spec.output == "log" else 0.0
        self.mean_scaled = spec.reduction == "mean"
        self._factor = spec.factor
        self._input_shape, self._probe = _INPUTS.get(estimator, (None, None))

        # a private copy of the estimator (``moved``) lends its module where no conversion
        # would change it in place: one copy of the net per new θ, not two
        first = next(spec.module.parameters())
        lend = _private and first.dtype == self.dtype and first.device == self.device
        self.module = (spec.module if lend else copy.deepcopy(spec.module)).to(
            device=self.device, dtype=self.dtype).eval()
        named = [(n, p) for n, p in spec.module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the model has no trainable parameters")
        self._names = [n for n, _ in named]
        self._shapes = [tuple(p.shape) for _, p in named]
        self._sizes = [p.numel() for _, p in named]
        own = dict(self.module.named_parameters())
        self._fixed = {n: t.detach() for n, t in own.items() if n not in self._names}
        self._fixed.update({n: b for n, b in self.module.named_buffers()})
        self._theta_t = torch.cat([own[n].detach().reshape(-1) for n in self._names])
        self.theta = self._theta_t.cpu().numpy().astype(np.float64)
        if not np.all(np.isfinite(self.theta)):
            bad = [n for n, p in named if not torch.isfinite(p).all()]
            raise ValueError(f"the network has NaN or infinite parameters (in {bad}): it cannot be "
                             "at an optimum; retrain it (a smaller learning rate, gradient clipping)")
        decay = np.concatenate([np.full(p.numel(), spec.decay.get(id(p), 0.0)) for _, p in named])
        self.penalty = ElasticNetPenalty(0.0, 1.0, np.sqrt(decay))

        K = self._probe_outputs(spec)
        if spec.family in ("cross_entropy", "nll"):
            self.loss = Multinomial(K)
            classes = spec.classes if spec.classes is not None else np.arange(K)
            self.classes_ = np.asarray(classes)
            if len(self.classes_) != K:
                raise ValueError(f"classes has {len(self.classes_)} labels but the module has {K} outputs")
            if K < 2:
                raise ValueError("a classifier's module must output at least two logits (or use 'bce')")
        else:
            if K != 1:
                raise ValueError(f"loss {spec.family!r} needs one output per sample, the module gives {K}")
            self.loss = Bernoulli() if spec.family == "bce" else Gaussian()
            self.classes_ = np.array([0, 1]) if spec.family == "bce" else None
        if fisher == "empirical":
            self.loss = _EmpiricalFisher(self.loss)

    #: the output layer keeps its units whatever the training rows: removing a class is allowed
    keeps_outputs = True

    # ------------------------------------------------------- parameter layout
    @property
    def param_slices(self) -> dict:
        """Trainable parameter name -> its slice of the flat ``θ`` (``named_parameters`` order)."""
        ends = np.cumsum(self._sizes)
        return {n: slice(int(e - s), int(e)) for n, s, e in zip(self._names, self._sizes, ends)}

    def layers(self) -> dict:
        """The ``nn.Linear`` / ``nn.Conv2d`` layers with trainable weights.

        Returns
        -------
        dict
            Layer name -> ``(n_units, slices)``: its output units (rows, channels) and the
            slices of ``θ`` holding its weight and bias, each viewable as ``(n_units, -1)``.
        """
        where = self.param_slices
        out = {}
        for name, m in self.module.named_modules():
            if not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                continue
            key = f"{name}." if name else ""
            if f"{key}weight" in where:
                parts = [where[f"{key}weight"]] + ([where[f"{key}bias"]] if f"{key}bias" in where else [])
                out[name] = (m.weight.shape[0], parts)
        return out

    def unit_mask(self, units: dict) -> np.ndarray:
        """Mask over ``θ`` of whole units: ``{layer name: unit indices}`` -> their rows of the
        weight (fan-in) and their bias entries."""
        layers = self.layers()
        mask = np.zeros(self.n_params, bool)
        for name, idx in units.items():
            if name not in layers:
                raise ValueError(f"{name!r} is not a Linear/Conv2d layer with trainable weights; "
                                 f"layers: {list(layers)}")
            n_units, parts = layers[name]
            for part in parts:
                mask[np.arange(part.start, part.stop).reshape(n_units, -1)[np.asarray(idx)].ravel()] = True
        return mask

    def layer_statistics(self, Z, G=None) -> dict:
        """Per layer and unit, the mean output and (with ``G``) the mean output gradient.

        Forward hooks record each Linear/Conv2d layer's output; the means run over the
        samples (and the positions of a convolution). With ``G`` (η-gradients of a
        quantity, shape (n, K), e.g. ``∂ℓ/∂η`` for the loss) the gradient of
        ``Σ_i G_iᵀ η_i`` with respect to each layer output is averaged alike.

        Returns
        -------
        dict
            Layer name -> ``{"outputs": (n_units,), "gradients": (n_units,) or None}``.
        """
        names = dict(self.module.named_modules())
        layers = list(self.layers())
        sums = {n: [0.0, 0.0] for n in layers}
        for sl in self._chunks(len(Z)):
            seen = {}
            hooks = [names[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
                     for n in layers]
            try:
                theta = self._theta_t.clone().requires_grad_(G is not None)
                with torch.set_grad_enabled(G is not None):
                    eta = self._f(theta, self._t(Z[sl]))
            finally:
                for h in hooks:
                    h.remove()
            outs = [seen[n] for n in layers]
            grads = (torch.autograd.grad((eta * self._t(G[sl])).sum(), outs) if G is not None
                     else [None] * len(outs))
            for n, o, g in zip(layers, outs, grads):
                dims = [d for d in range(o.dim()) if d != 1]
                sums[n][0] = sums[n][0] + o.detach().sum(dim=dims)
                if g is not None:
                    sums[n][1] = sums[n][1] + g.sum(dim=dims)
        out = {}
        for n in layers:
            o = seen[n] if len(Z) else None
            per_row = int(np.prod(o.shape[2:])) if o is not None and o.dim() > 2 else 1
            scale = 1.0 / max(len(Z) * per_row, 1)
            out[n] = {"outputs": self._np(sums[n][0]) * scale,
                      "gradients": self._np(sums[n][1]) * scale if G is not None else None}
        return out

    # ------------------------------------------------------- Kronecker factors
    def kronecker_layers(self) -> dict:
        """The layers K-FAC factorises: trainable ``nn.Linear`` and ``nn.Conv2d`` weights.

        Returns
        -------
        dict
            Layer name -> ``(index, n_out, n_in)``: ``index`` (n_out, n_in) holds the
            positions in ``θ`` of the layer's parameters as one matrix ``[W | b]`` (a
            convolution's weight flattened to ``C_out × C_in·k_h·k_w``; the bias, where
            trainable, as the last column).
        """
        modules = dict(self.module.named_modules())
        out = {}
        for name, (n_out, parts) in self.layers().items():
            m = modules[name]
            if isinstance(m, torch.nn.Conv2d) and (m.groups != 1 or isinstance(m.padding, str)
                                                   and m.padding != "valid"
                                                   or m.padding_mode != "zeros"):
                continue     # grouped / "same"-padded / non-zero-padded: left to the exact blocks
            index = np.arange(parts[0].start, parts[0].stop).reshape(n_out, -1)
            if len(parts) > 1:   # the bias, as the last column
                index = np.column_stack([index, np.arange(parts[1].start, parts[1].stop)])
            out[name] = (index, n_out, index.shape[1])
        return out

    def _output_factors(self, y, c, kind, eta, weights=None):
        """``L_i`` (n, K, R) with ``c_i W_i = L_i L_iᵀ`` (``weights``: the ``c_i W_i`` if known): the
        output curvature's square root (its negative part, a Hessian's away from a minimum, dropped)."""
        W = (self.output_curvature(y, eta, kind) * np.asarray(c, dtype=float)[:, None, None]
             if weights is None else weights)
        lam, vec = np.linalg.eigh(W)
        lam = np.maximum(lam, 0.0)
        scale = lam.max(axis=0)
        keep = scale > 1e-12 * max(scale.max(), 1e-300)   # e.g. the softmax's null direction
        return vec[:, :, keep] * np.sqrt(lam[:, None, keep])

    def kronecker_statistics(self, Z, y, c, kind="fisher", eta=None, bases=None, weights=None) -> dict:
        """Per-layer statistics of the Gauss–Newton curvature ``Σ_i J_iᵀ c_i W_i J_i`` for K-FAC.

        With ``c_i W_i = L_i L_iᵀ`` (columns ``r``), a layer with inputs ``a_it`` (a 1 appended
        for the bias; a convolution's unfolded patches at positions ``t``) and output
        gradients ``g_irt = ∂(L_irᵀ η_i)/∂(layer output)_t`` has the per-sample, per-column
        weight gradients ``S_ir = Σ_t g_irt a_itᵀ`` and its exact curvature block is
        ``Σ_ir vec(S_ir) vec(S_ir)ᵀ``. Forward hooks read ``a``; the gradients are pulled
        back from the outputs, one backward pass per column ``r``.

        Parameters
        ----------
        Z, y, c, kind, eta, weights
            As for :meth:`curvature` (``kind="hessian"``: its Gauss–Newton part).
        bases : dict, optional
            Layer name -> ``(Q_A, Q_G)``, orthonormal input and output bases.

        Returns
        -------
        dict
            Without ``bases``: layer name -> ``(A, G, count)`` with ``A = Σ_it c_i a_it a_itᵀ``,
            ``G = Σ_irt g_irt g_irtᵀ`` and ``count = Σ_i c_i T_i`` (weighted positions). With ``bases``:
            layer name -> ``Λ`` (n_out, n_in), ``Λ_jk = Σ_ir (Q_Gᵀ S_ir Q_A)_jk²``, the
            exact block's diagonal in the basis ``Q_A ⊗ Q_G``.
        """
        eta = self.eta(Z) if eta is None else eta
        c = np.asarray(c, dtype=float)
        key = (id(Z), len(Z), kind, id(y), id(c), id(weights))   # fisher="mc": the same labels in both passes
        if getattr(self, "_kf_key", None) != key:
            self._kf_key, self._kf_factors = key, self._output_factors(y, c, kind, eta, weights)
        L = self._kf_factors
        Q = None if bases is None else {n: (self._t(qa), self._t(qg)) for n, (qa, qg) in bases.items()}
        sums = {}
        for sl, pieces in self._layer_pieces(Z, L):
            ct = self._t(c[sl])
            for n, (a, g) in pieces.items():                 # a (b, T, D), g (b, R, T, O)
                if Q is None:
                    flat = a.reshape(-1, a.shape[-1])
                    A = (flat * ct.repeat_interleave(a.shape[1])[:, None]).T @ flat
                    G = g.reshape(-1, g.shape[-1]).T @ g.reshape(-1, g.shape[-1])
                    k = float(c[sl].sum()) * a.shape[1]
                    prev = sums.get(n)
                    sums[n] = (A, G, k) if prev is None else (prev[0] + A, prev[1] + G, prev[2] + k)
                else:
                    sums[n] = sums.get(n, 0) + self._rotated_squares(a, g, *Q[n])
        if Q is None:
            return {n: (self._np(A), self._np(G), k) for n, (A, G, k) in sums.items()}
        return {n: self._np(v) for n, v in sums.items()}

    @staticmethod
    def _rotated_squares(a, g, qa, qg):
        """``Σ_ir (Q_Gᵀ S_ir Q_A)²`` over a chunk, ``S_ir = Σ_t g_irt a_itᵀ``, by the cheaper order:
        rotate the positions first (``T·D²`` once, then ``T·O·D`` per column), or form each
        ``S_ir`` and rotate it (``T·O·D + O²D + O·D²`` per column; cheaper for wide inputs at
        many positions, e.g. an early convolution, or with one column)."""
        T, D, R, O = a.shape[1], a.shape[2], g.shape[1], g.shape[3]
        if T == 1:                                  # one position: (g aᵀ)² = g² (a²)ᵀ, S never formed
            return ((g[:, :, 0] @ qg) ** 2).sum(dim=1).T @ ((a[:, 0] @ qa) ** 2)
        lam = 0
        if T * D * D + R * T * O * (O + D) <= R * (T * O * D + O * O * D + O * D * D):
            a, g = a @ qa, g @ qg
            for r in range(R):                      # S_ir rotated, one column r at a time (memory)
                S = torch.einsum("bto,btd->bod", g[:, r], a)
                lam = lam + (S * S).sum(dim=0)
            return lam
        for r in range(R):
            S = qg.T @ torch.einsum("bto,btd->bod", g[:, r], a) @ qa
            lam = lam + (S * S).sum(dim=0)
        return lam

    def _layer_pieces(self, Z, L, layers=None):
        """Per chunk of rows ``sl``: ``(sl, {layer: (a, g)})``, the layer's inputs ``a`` (b, T, D)
        (:meth:`_layer_inputs`) and output gradients ``g`` (b, R, T, O) of ``Σ_i L_irᵀ η_i``, one
        backward pass per column ``r`` of ``L`` (n, K, R); forward hooks read the inputs. Chunks
        are bounded by the unfolded inputs and gradients of one sample."""
        layers = self.kronecker_layers() if layers is None else layers
        modules = dict(self.module.named_modules())
        per_row = self._kronecker_row_size(Z, layers, modules, L.shape[2])
        bound = (16 if self.device.type == "cuda" else 4) * _ELEMENTS     # a GPU wants larger chunks
        names = list(layers)
        for sl in row_blocks(len(Z), max(1, min(self.batch_size, bound // per_row))):
            seen = {}

            def hook(m, inp, out, name):
                if name in seen:
                    raise ValueError(f"layer {name!r} is called more than once per forward pass "
                                     "(shared weights): K-FAC needs each layer applied once")
                seen[name] = (inp[0].detach(), out)

            hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: hook(m, i, o, n)) for n in names]
            try:
                theta = self._theta_t.clone().requires_grad_(True)
                out = self._f(theta, self._t(Z[sl]))
            finally:
                for h in hooks:
                    h.remove()
            outs = [seen[n][1] for n in names]
            grads = self._output_gradients(out, outs, self._t(L[sl]))
            pieces = {}
            for n, g in zip(names, grads):
                g = (g.reshape(*g.shape[:3], -1).transpose(2, 3) if isinstance(modules[n], torch.nn.Conv2d)
                     else g.reshape(g.shape[0], g.shape[1], -1, g.shape[-1]))      # (b, R, T, O)
                pieces[n] = (self._layer_inputs(modules[n], seen[n][0], layers[n][2]), g)
            seen.clear()
            del outs, grads, out
            yield sl, pieces

    def kronecker_gradients(self, Z, G, projections) -> np.ndarray:
        """Per-sample gradients ``J_iᵀ G_i`` of the factorised layers, each projected as
        ``P_out S_i P_inᵀ`` with ``S_i = Σ_t g_it a_itᵀ`` (the layer's ``[W | b]`` gradient,
        as in :meth:`kronecker_statistics`), computed as ``Σ_t (P_out g_it)(P_in a_it)ᵀ``: the
        full per-sample gradient is never formed.

        Parameters
        ----------
        Z : design rows (n, ...).
        G : ndarray of shape (n, K)
            Weights of the outputs (``c_i ∂ℓ_i/∂η_i`` for removal gradients).
        projections : dict
            Layer name (of :meth:`kronecker_layers`) -> ``(P_out, P_in)``, arrays of shape
            (k_out, n_out) and (k_in, n_in), or None for the identity.

        Returns
        -------
        ndarray of shape (n, Σ k_out·k_in)
            The layers in the order of ``projections``, each row-major ``(k_out, k_in)``.
        """
        layers = self.kronecker_layers()
        unknown = sorted(set(projections) - set(layers))
        if unknown:
            raise ValueError(f"layers {unknown} are not factorised layers of this network; valid: {list(layers)}")
        layers = {n: layers[n] for n in projections}
        P = {n: tuple(None if m is None else self._t(m) for m in pr) for n, pr in projections.items()}
        widths = [(layers[n][1] if po is None else po.shape[0]) * (layers[n][2] if pi is None else pi.shape[0])
                  for n, (po, pi) in P.items()]
        out = np.empty((len(Z), sum(widths)))
        G = np.asarray(G, dtype=float).reshape(len(Z), -1, 1)
        for sl, pieces in self._layer_pieces(Z, G, layers):
            start = 0
            for (n, (po, pi)), w in zip(P.items(), widths):
                a, g = pieces[n]
                a = a if pi is None else a @ pi.T                  # (b, T, k_in)
                g = g[:, 0] if po is None else g[:, 0] @ po.T      # (b, T, k_out)
                out[sl, start:start + w] = self._np(torch.einsum("bto,btd->bod", g, a).reshape(len(a), -1))
                start += w
        return out

    @staticmethod
    def _output_gradients(out, outs, L):
        """Gradients of ``Σ_i L_irᵀ η_i`` w.r.t. each tensor in ``outs``, stacked over the columns
        ``r`` as ``(b, R, ...)``: one backward pass per column (a vmapped backward,
        ``is_grads_batched``, was 7× slower on a CNN: convolutions' backward has no batching rule)."""
        cols = [torch.autograd.grad(out, outs, grad_outputs=L[:, :, r], retain_graph=True, allow_unused=True)
                for r in range(L.shape[2])]
        return [torch.stack([torch.zeros_like(o) if c[j] is None else c[j] for c in cols], 1)
                for j, o in enumerate(outs)]

    def _layer_inputs(self, module, x, n_in):
        """A layer's inputs as ``(b, T, D)`` rows: a convolution's patches, a 1 for the bias."""
        if isinstance(module, torch.nn.Conv2d):
            pad = 0 if isinstance(module.padding, str) else module.padding
            a = torch.nn.functional.unfold(x, module.kernel_size, module.dilation, pad,
                                           module.stride).transpose(1, 2)
        else:
            a = x.reshape(x.shape[0], -1, x.shape[-1])
        if a.shape[-1] < n_in:                                    # the bias column
            a = torch.cat([a, torch.ones_like(a[..., :1])], dim=-1)
        return a

    def _kronecker_row_size(self, Z, layers, modules, R):
        """Entries one sample adds to a chunk of :meth:`kronecker_statistics` (a probe on one row)."""
        if not len(Z):
            return 1
        sizes = {}
        hooks = [modules[n].register_forward_hook(
            lambda m, i, o, n=n: sizes.__setitem__(n, (i[0][:1], o[:1].numel()))) for n in layers]
        try:
            with torch.no_grad():
                self._f(self._theta_t, self._t(Z[:1]))
        finally:
            for h in hooks:
                h.remove()
        total = 0
        for n, (x, n_out) in sizes.items():
            a = self._layer_inputs(modules[n], x, layers[n][2])
            total += 2 * a.numel() + 2 * (R + 1) * n_out + layers[n][1] * layers[n][2]
        return max(total, 1)

    # -------------------------------------------------------------- torch plumbing
    def _probe_outputs(self, spec):
        """Number of outputs K: the out_features of the module's last Linear layer.

        :meth:`design` checks it against a forward pass.
        """
        for m in reversed(list(self.module.modules())):
            if isinstance(m, torch.nn.Linear):
                return m.out_features
        raise ValueError("cannot tell the number of outputs: the module has no torch.nn.Linear layer")

    def _params(self, theta):
        chunks = torch.split(theta, self._sizes)
        params = {n: c.view(s) for n, c, s in zip(self._names, chunks, self._shapes)}
        return {**params, **self._fixed}

    def _f(self, theta, x):
        """Batch outputs η, shape (b, K)."""
        out = functional_call(self.module, self._params(theta), (x,))
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = out.reshape(out.shape[0], -1)
        return torch.log(out + self._log_eps) if self._output == "log" else out

    def _f1(self, theta, x):
        return self._f(theta, x.unsqueeze(0))[0]

    def _t(self, a):
        return torch.as_tensor(np.asarray(a), device=self.device, dtype=self.dtype)

    def _theta(self, theta=None):
        return self._theta_t if theta is None else self._t(theta)

    def _chunks(self, n, per_sample=1):
        return row_blocks(n, min(self.batch_size, _ELEMENTS // max(per_sample, 1)))

    @staticmethod
    def _np(t):
        return t.detach().cpu().numpy().astype(np.float64)

    # ---------------------------------------------------------------------- data
    def data_weights(self, y, sample_weight):
        c = self._factor * np.asarray(sample_weight, dtype=float)
        return c / sample_weight.sum() if self.mean_scaled else c

    def design(self, X):
        if hasattr(X, "toarray"):
            X = X.toarray()
        # float32 data stay float32 (half the memory of a copy; the products convert each chunk)
        X = check_array(X, dtype=[np.float64, np.float32], allow_nd=True, ensure_2d=False)
        if X.ndim < 2:
            raise ValueError(f"X must have at least two dimensions (samples × features), got {X.shape}")
        if self._input_shape is None:
            try:
                with torch.no_grad():
                    K = self._f(self._theta_t, self._t(X[:1])).shape[1]
            except Exception as exc:  # noqa: BLE001 - report what the module said
                raise ValueError(f"the module cannot be evaluated on X of shape {X.shape}: {exc}") from exc
            if self.n_outputs != K:
                raise ValueError(f"the module gives {K} outputs per sample, the loss expects {self.n_outputs}")
            self._input_shape = X.shape[1:]
            self._probe = X[:8]
        elif X.shape[1:] != self._input_shape:
            raise ValueError(f"X has sample shape {X.shape[1:]}, but the model was set up for {self._input_shape}")
        return X

    # ------------------------------------------------------------------ protocol
    def eta(self, Z, theta=None):
        th = self._theta(theta)
        with torch.no_grad():
            out = [self._f(th, self._t(Z[sl])) for sl in self._chunks(len(Z))]
        return self._np(torch.cat(out)) if out else np.zeros((0, self.n_outputs))

    def _jacobian_chunks(self, Z):
        jac = vmap(jacrev(self._f1), in_dims=(None, 0))
        for sl in self._chunks(len(Z), self.n_outputs * self.n_params):
            yield sl, jac(self._theta_t, self._t(Z[sl]))

    def jacobians(self, Z):
        out = np.empty((len(Z), self.n_outputs, self.n_params))
        for sl, J in self._jacobian_chunks(Z):
            out[sl] = self._np(J)
        return out

    def gradients(self, Z, G):
        """Rows ``J_iᵀ G_i`` (per-sample gradients for ``G = ∂ℓ/∂η``), shape (n, p), in the
        adapter's precision: vmapped per-sample gradients of each parameter tensor, written
        straight into the output (memory traffic, not flops, bounds this product)."""
        G = np.asarray(G, dtype=float).reshape(len(Z), -1)
        params = self._params(self._theta_t)
        own = {n: params[n] for n in self._names}
        fixed = {n: t for n, t in params.items() if n not in own}

        def one(pr, x, gi):
            out = functional_call(self.module, {**pr, **fixed}, (x[None],))
            out = out[0] if isinstance(out, (tuple, list)) else out
            out = out.reshape(1, -1)
            out = torch.log(out + self._log_eps) if self._output == "log" else out
            return out[0] @ gi

        per = vmap(grad(one), in_dims=(None, 0, 0))
        out = torch.empty((len(Z), self.n_params), dtype=self.dtype)    # on the host
        for sl in self._chunks(len(Z), self.n_params):
            rows = per(own, self._t(Z[sl]), self._t(G[sl]))
            parts = [rows[n].reshape(sl.stop - sl.start, -1) for n in self._names]
            if self.device.type == "cpu":
                torch.cat(parts, dim=1, out=out[sl])        # a row block is contiguous
            else:
                out[sl] = torch.cat(parts, dim=1).cpu()
        return out.numpy()

    def total_gradient(self, Z, G, theta=None):
        G = np.asarray(G, dtype=float).reshape(len(Z), -1)
        th = self._theta(theta)
        total = torch.zeros(self.n_params, device=self.device, dtype=self.dtype)
        for sl in self._chunks(len(Z)):
            x = self._t(Z[sl])
            _, pull = vjp(lambda t: self._f(t, x), th)
            total += pull(self._t(G[sl]))[0]
        return self._np(total)

    def loss_and_gradient(self, Z, y, c, theta=None):
        """``(Σ_i c_i ℓ_i, its gradient)`` from one forward and one backward pass per chunk
        (the outputs of the pass that is pulled back: a full-batch gradient's cost)."""
        th, c = self._theta(theta), np.asarray(c, dtype=float)
        value, total = 0.0, torch.zeros(self.n_params, device=self.device, dtype=self.dtype)
        for sl in self._chunks(len(Z)):
            x = self._t(Z[sl])
            out, pull = vjp(lambda t: self._f(t, x), th)
            eta = self._np(out)
            value += float(c[sl] @ self.loss.loss(y[sl], eta))
            total += pull(self._t(c[sl, None] * self.loss.gradient(y[sl], eta)))[0]
        return value, self._np(total)

    def jvp(self, Z, v):
        v = self._t(v)
        out = []
        for sl in self._chunks(len(Z)):
            x = self._t(Z[sl])
            out.append(jvp(lambda th: self._f(th, x), (self._theta_t,), (v,))[1])
        return self._np(torch.cat(out))

    def jacobian_quadratic(self, Z, A):
        out = np.empty((len(Z), self.n_outputs, self.n_outputs))
        if not isinstance(A, np.ndarray):   # M⁻¹ by solves (an InverseOperator): no p × p matrix
            for sl, J in self._jacobian_chunks(Z):
                out[sl] = A.quadratic_blocks(self._np(J).reshape(-1, self.n_params), self.n_outputs)
            return out
        A = self._t(A)
        for sl, J in self._jacobian_chunks(Z):
            out[sl] = self._np(torch.einsum("bkp,blp->bkl", J @ A, J))
        return out

    # ---------------------------------------------------------------- curvature
    def output_curvature(self, y, eta, kind):
        """``W_i`` of the curvature: the family's, or sampled / observed outer products."""
        if kind == "fisher" and self.fisher == "mc":
            rng = np.random.default_rng(self._seed())
            g = self.loss.gradient(self.loss.sample(eta, rng), eta)
            return g[:, :, None] * g[:, None, :]
        return self.loss.curvature(y, eta, kind)

    def _seed(self):
        rs = self.random_state
        if isinstance(rs, np.random.RandomState):
            return rs.randint(2**31)
        return rs

    def curvature(self, Z, y, c, kind="fisher", eta=None, weights=None):
        """Dense ``Σ_i c_i J_iᵀ W_i J_i`` (+ the second-derivative term for the Hessian);
        ``weights``: the ``c_i W_i`` if already computed."""
        p = self.n_params
        eta = self.eta(Z) if eta is None else eta
        W = (self.output_curvature(y, eta, kind) * np.asarray(c)[:, None, None]
             if weights is None else weights)
        lam, vec = np.linalg.eigh(W)                       # W_i = V diag(λ) Vᵀ
        scale = np.abs(lam).max(axis=0)
        keep = scale > 1e-12 * max(scale.max(), 1e-300)   # e.g. the softmax's null direction
        lam, vec = lam[:, keep], vec[:, :, keep]
        M = torch.zeros((p, p), device=self.device, dtype=self.dtype)
        for sl, J in self._jacobian_chunks(Z):
            L = self._t(lam[sl])
            B = torch.einsum("bkr,bkp->brp", self._t(vec[sl]), J) * L.abs().sqrt()[..., None]
            B = B.reshape(-1, p)
            sign = torch.sign(L).reshape(-1, 1)
            M.addmm_(B.T, B * sign) if (L < 0).any() else M.addmm_(B.T, B)
        if kind == "hessian":
            M += self.residual_hessian(Z, np.asarray(c)[:, None] * self.loss.gradient(y, eta))
        M = (M + M.T) / 2
        return self._np(M)

    def residual_hessian(self, Z, R):
        """``Σ_i Σ_k R_ik ∇²η_ik`` as a dense p × p matrix, by blocks of Hessian rows.

        Reverse-over-reverse: the gradient ``∇ψ`` of a block of rows is pulled back along
        unit vectors (rows of the symmetric Hessian), vmapped over ``width`` of them. Blocks
        of ``_HESSIAN_PAIRS`` (row, unit vector) pairs keep the vmapped activations in cache:
        on the 2,000-row Adult MLP (2,882 parameters, one thread) this is 2.5–3× faster
        than forward-over-reverse over 2,000 rows × 131 vectors.
        """
        p, n = self.n_params, len(Z)
        H = torch.zeros((p, p), device=self.device, dtype=self.dtype)
        eye = torch.eye(p, device=self.device, dtype=self.dtype)
        rows = min(n, _HESSIAN_ROWS)
        width = max(1, _HESSIAN_PAIRS // rows)
        for sl in row_blocks(n, rows):
            x, r = self._t(Z[sl]), self._t(R[sl])
            _, pull = vjp(grad(lambda th: (self._f(th, x) * r).sum()), self._theta_t)
            rows_of = vmap(lambda v: pull(v)[0])
            for j in range(0, p, width):
                H[j:j + width] += rows_of(eye[j:j + width])
        return H

    def residual_matvec(self, Z, R, V):
        """``Σ_i Σ_k R_ik ∇²η_ik V``, the second-derivative term of a Hessian whose output
        gradients are ``R`` (``c_i ∂ℓ_i/∂η_i``), as products (forward over reverse, vmapped
        over the columns of ``V``, shape (p,) or (p, m)): never the p × p matrix."""
        V = np.asarray(V, dtype=float)
        Vt = self._t(V.reshape(self.n_params, -1).T)            # (m, p)
        R = np.asarray(R, dtype=float).reshape(len(Z), -1)
        th, out = self._theta_t, torch.zeros_like(Vt)
        for sl in self._chunks(len(Z)):
            x, r = self._t(Z[sl]), self._t(R[sl])
            g = grad(lambda t: (self._f(t, x) * r).sum())
            out += vmap(lambda v: jvp(g, (th,), (v,))[1])(Vt)
        return self._np(out.T).reshape(V.shape)

    def _torch_loss(self, eta, y, c):
        """``Σ_i c_i ℓ_i(η_i)`` in torch (the family's loss, to be differentiated twice)."""
        fam = getattr(self.loss, "family", self.loss)
        if isinstance(fam, Multinomial):
            return (c * (torch.logsumexp(eta, 1) - eta.gather(1, y.long()[:, None])[:, 0])).sum()
        if isinstance(fam, Bernoulli):
            e = eta[:, 0]
            return (c * (torch.nn.functional.softplus(e) - y * e)).sum()
        return (c * 0.5 * (y - eta[:, 0]) ** 2).sum()   # Gaussian

    def _matvec_state(self, Z, y, c, kind, eta, weights=None):
        """Per chunk of rows: the inputs and what the products need, on the device, kept for
        the next call on the same rows (``fisher="mc"``'s sampled labels are drawn once per
        rows, so that the operator is a fixed matrix)."""
        c = np.asarray(c, dtype=float)
        probe = np.asarray(Z[:: max(1, len(Z) // 16)])       # a fingerprint of the rows
        key = (id(Z), len(Z), kind, hash(c.tobytes()), hash(np.asarray(y).tobytes()),
               hash(probe.tobytes()), id(weights))
        if getattr(self, "_mv_key", None) != key:
            direct = kind == "hessian"   # the exact Hessian: the loss differentiated twice
            if not direct:
                eta = self.eta(Z) if eta is None else eta
                W = (self.output_curvature(y, eta, kind) * c[:, None, None] if weights is None
                     else np.asarray(weights, dtype=float))
            chunks = []
            for sl in self._chunks(len(Z)):
                x, ct = self._t(Z[sl]), self._t(c[sl])
                yt = self._t(np.asarray(y, dtype=float)[sl])
                chunks.append((x, yt, ct) if direct else (x, self._t(W[sl])))
            self._mv_key, self._mv_cache, self._mv_weights = key, chunks, None if direct else W
        return self._mv_cache

    def curvature_factor(self, Z, y, c, kind="fisher", eta=None, weights=None):
        """The Gauss–Newton curvature's square-root factor ``B``, ``BᵀB = Σ_i J_iᵀ c_i W_i J_i``,
        as R blocks of shape (n, p) (in the adapter's precision; ``B`` is their stack).

        Its rows are ``J_iᵀ L_ir`` for ``c_i W_i = L_i L_iᵀ`` (R columns; the softmax's null
        direction dropped): one vmapped per-sample gradient pass per column, which on a CNN
        costs a few curvature products (10–20 on the digits CNN) and makes every later
        product two matrix products. ``c_i W_i`` are those of :meth:`curvature_matvec` on
        the same rows (``fisher="mc"``: the same labels), so ``Bᵀ(B V)`` is its product to
        rounding. ``kind="hessian"`` has no such factor (its second-derivative term).
        """
        if kind == "hessian":
            raise ValueError("the Hessian has no square-root factor (its second-derivative term is "
                             "indefinite): use kind='fisher'")
        self._matvec_state(Z, y, c, kind, eta, weights)
        L = self._output_factors(None, None, kind, None, weights=self._mv_weights)
        return [self.gradients(Z, L[:, :, r]) for r in range(L.shape[2])]

    def curvature_matvec(self, Z, y, c, V, kind="fisher", eta=None, weights=None):
        """``M V`` for the data part of the curvature (the same matrix as :meth:`curvature`).

        ``V`` has shape (p,) or (p, m). The Hessian's product is that of the loss
        ``Σ c_i ℓ_i(η_i(θ))`` differentiated twice (forward over reverse, the cost of a
        full-batch double backward); the Fisher's is ``Jᵀ (c W) J V`` (a Jacobian-vector
        product, the output curvature, a vector-Jacobian product). Blocks of vectors are
        vmapped. The rows' inputs and output curvatures are kept between calls on the same
        rows.
        """
        V = np.asarray(V, dtype=float)
        Vt = self._t(V.reshape(self.n_params, -1).T)            # (m, p)
        single = Vt.shape[0] == 1
        th = self._theta_t
        out = torch.zeros_like(Vt)
        for part in self._matvec_state(Z, y, c, kind, eta, weights):
            if kind == "hessian":
                x, yt, ct = part
                g = grad(lambda t: self._torch_loss(self._f(t, x), yt, ct))
                hvp = lambda v: jvp(g, (th,), (v,))[1]  # noqa: E731
                out += hvp(Vt[0])[None] if single else vmap(hvp)(Vt)
                continue
            x, W = part
            f = lambda t: self._f(t, x)  # noqa: E731
            _, pull = vjp(f, th)
            push = lambda v: jvp(f, (th,), (v,))[1]  # noqa: E731
            U = push(Vt[0])[None] if single else vmap(push)(Vt)           # (m, b, K)
            U = torch.einsum("bkl,mbl->mbk", W, U)
            out += pull(U[0])[0][None] if single else vmap(lambda u: pull(u)[0])(U)
        return self._np(out.T).reshape(V.shape)

    def null_space(self):
        """Softmax shift directions of an unpenalised last Linear layer, or None.

        Adding the same vector to every output row of the last Linear layer (weights and
        bias) shifts all logits equally and leaves the softmax loss unchanged. They are
        returned (orthonormal) only if unpenalised and if the module's outputs on a few
        training rows confirm the invariance.
        """
        if self.n_outputs < 2 or self._probe is None:
            return None
        last = [n for n, m in self.module.named_modules() if isinstance(m, torch.nn.Linear)][-1]
        K = self.n_outputs
        offset, groups = 0, []
        for name, size, shape in zip(self._names, self._sizes, self._shapes):
            if name.rsplit(".", 1)[0] == last and shape[0] == K:
                groups.append(offset + np.arange(size).reshape(K, -1))   # rows are outputs
            offset += size
        if not groups:
            return None
        idx = np.concatenate(groups, axis=1)                               # (K, columns)
        if np.any(self.penalty.hessian_diagonal()[idx] > 0):   # penalised: no invariance
            return None
        Zs = np.zeros((self.n_params, idx.shape[1]))
        Zs[idx, np.arange(idx.shape[1])[None, :]] = 1.0 / np.sqrt(K)
        shifts = np.stack([self.jvp(self._probe, z) for z in Zs.T[:2]])   # (2, m, K)
        if not np.allclose(shifts, shifts[..., :1], atol=1e-8 * max(1.0, np.abs(shifts).max())):
            return None
        return Zs

    # ------------------------------------------------------------------ write back
    def with_params(self, theta):
        """A deep copy of the skorch net / TorchModel carrying the parameters ``theta``."""
        est = copy.deepcopy(self.estimator)
        module = est.module if isinstance(est, TorchModel) else est.module_
        own = dict(module.named_parameters())
        theta = torch.as_tensor(np.asarray(theta, dtype=np.float64))
        with torch.no_grad():
            for name, chunk, shape in zip(self._names, torch.split(theta, self._sizes), self._shapes):
                p = own[name]
                p.copy_(chunk.view(shape).to(device=p.device, dtype=p.dtype))
        if self._input_shape is not None:
            _INPUTS[est] = (self._input_shape, self._probe)
        return est

    def moved(self, theta, **options):
        """The adapter of :meth:`with_params` (its own private copy of the net, shared
        with the adapter where device and dtype match)."""
        options = {k: v for k, v in options.items() if k not in ("solver", "curvature")}
        return TorchAdapter(self.with_params(theta), _private=True, **options)


#: torch.func's transforms keep global state (forward-AD levels) and ``functional_call``
#: swaps a module's parameters in place while it runs: two threads inside an adapter at once
#: (two threads querying one estimator, ``n_jobs`` under joblib's threading backend) corrupt
#: each other's numbers and can leave the module broken. Every adapter call holds this lock
#: (re-entrant: calls nest), so that threads take turns; processes are unaffected.
_TORCH_LOCK = threading.RLock()


def _serialised(method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with _TORCH_LOCK:
            return method(*args, **kwargs)
    return locked


for _name, _method in list(vars(TorchAdapter).items()):
    if inspect.isfunction(_method) and _name != "__init__":
        setattr(TorchAdapter, _name, _serialised(_method))
TorchAdapter.__init__ = _serialised(TorchAdapter.__init__)


def _copy_state(adapter, memo=None):
    with _TORCH_LOCK:   # never while another thread has the module's parameters swapped
        return copy.deepcopy(adapter.__dict__, memo)


def _deepcopy(adapter, memo):
    new = object.__new__(type(adapter))
    memo[id(adapter)] = new
    new.__dict__.update(_copy_state(adapter, memo))
    return new


TorchAdapter.__deepcopy__ = _deepcopy
TorchAdapter.__getstate__ = _copy_state      # pickling (joblib's process workers) alike


def make_torch_adapter(estimator, *, device="auto", dtype="auto", solver="auto", batch_size=4096,
                       random_state=None, curvature="fisher", fisher="exact", **kw):
    """Adapter for a fitted skorch net or :class:`TorchModel` (see the module docstring).

    ``solver`` and ``curvature`` are chosen by the influence estimator; they are accepted
    here so that every adapter takes the same options.

    Parameters
    ----------
    estimator : fitted skorch net or TorchModel
    device, dtype, batch_size, random_state, fisher
        As for :class:`TorchAdapter`.
    solver, curvature, **kw
        Accepted and ignored.

    Returns
    -------
    TorchAdapter
    """
    return TorchAdapter(estimator, device=device, dtype=dtype, batch_size=batch_size,
                        random_state=random_state, fisher=fisher)
