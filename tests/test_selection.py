"""GIF selection rules pick the rows they claim, on networks with planted activations."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from skinfluence.models import make_adapter
from skinfluence.models.torch import TorchModel
from skinfluence.selection import RULES, select_parameters

PLANTED = np.array([0.1, -5.0, 3.0, 0.0, -0.4, 2.0])       # the hidden units' constant outputs


def _planted_mlp():
    """Linear(3, 6) with zero weights and biases PLANTED, then Linear(6, 2)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Linear(6, 2)).double()
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.copy_(torch.as_tensor(PLANTED))
    return net


def _rows(net):
    """Flat indices of each hidden unit's fan-in weights and bias (first layer)."""
    return [np.r_[np.arange(3 * u, 3 * u + 3), 18 + u] for u in range(6)]


X = np.random.default_rng(0).standard_normal((20, 3))
Y = np.arange(20) % 2


def test_highest_and_lowest_outputs_take_the_planted_rows():
    net = _planted_mlp()
    ad = make_adapter(TorchModel(net))
    ratio = 8 / 24                                              # two whole rows of 4 in layer 0
    mask, table = select_parameters(ad, X, rule="highest_outputs", ratio=ratio, random_state=0)
    rows = _rows(net)
    assert table.loc[0, "units"] == [1, 2]                      # |−5| > |3| > |2| > ...
    assert np.flatnonzero(mask[:24]).tolist() == sorted(np.r_[rows[1], rows[2]].tolist())
    mask, table = select_parameters(ad, X, rule="lowest_outputs", ratio=ratio, random_state=0)
    assert table.loc[0, "units"] == [3, 0]
    assert np.flatnonzero(mask[:24]).tolist() == sorted(np.r_[rows[3], rows[0]].tolist())


def test_budget_per_layer_and_leftover_inside_the_next_unit():
    net = _planted_mlp()
    ad = make_adapter(TorchModel(net))
    mask, table = select_parameters(ad, X, rule="highest_outputs", ratio=0.5, random_state=0)
    # layer 0: 24 parameters → 12 = 3 whole rows of 4; layer 1: 14 parameters → 7 = 1 row of 7
    assert table["n_selected"].tolist() == [12, 7] and mask.sum() == 19
    assert table.loc[0, "units"] == [1, 2, 5] and table.loc[0, "partial_unit"] == -1
    mask, table = select_parameters(ad, X, rule="highest_outputs", ratio=0.25, random_state=0)
    # layer 0: 6 = one row (unit 1) + 2 random fan-in weights of unit 2, not its bias
    assert table.loc[0, "units"] == [1] and table.loc[0, "partial_unit"] == 2
    extra = np.flatnonzero(mask[:24] & ~np.isin(np.arange(24), _rows(net)[1]))
    assert len(extra) == 2 and np.isin(extra, np.arange(6, 9)).all()


def test_gradient_rules_rank_by_the_examined_loss_gradient():
    """|mean ∂ℓ/∂h_u| over the examined rows, against autograd on the user's own net."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    with torch.no_grad():
        net[2].weight.mul_(torch.as_tensor([0.01, 3.0, 0.5, 2.0, 0.0, 1.0]))
    ad = make_adapter(TorchModel(net))
    h = net[0](torch.as_tensor(X)).detach().requires_grad_()
    loss = torch.nn.functional.cross_entropy(net[2](torch.tanh(h)), torch.as_tensor(Y), reduction="sum")
    loss.backward()
    score = h.grad.mean(0).abs().numpy()
    _, table = select_parameters(ad, X, Y, rule="highest_gradients", ratio=0.5)
    assert table.loc[0, "units"] == np.argsort(-score)[:3].tolist()
    _, table = select_parameters(ad, X, Y, rule="lowest_gradients", ratio=0.5)
    assert table.loc[0, "units"] == np.argsort(score)[:3].tolist()


def test_conv_channels_ranked_by_mean_over_positions():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 4, 3, padding=1)
    net = torch.nn.Sequential(conv, torch.nn.Flatten(), torch.nn.Linear(4 * 16, 2)).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.as_tensor([0.5, -2.0, 1.0, 0.1]))
    ad = make_adapter(TorchModel(net))
    Xi = np.random.default_rng(0).standard_normal((5, 1, 4, 4))
    mask, table = select_parameters(ad, Xi, rule="highest_outputs", ratio=0.5)   # 2 of 4 channels (10 each)
    assert table.loc[0, "type"] == "Conv2d" and table.loc[0, "units"] == [1, 2]
    chosen = np.flatnonzero(mask[:40])
    assert chosen.tolist() == list(range(9, 27)) + [36 + 1, 36 + 2]


def test_random_rule_is_reproducible_and_takes_whole_rows():
    ad = make_adapter(TorchModel(_planted_mlp()))
    a, ta = select_parameters(ad, X, rule="random", ratio=8 / 24, random_state=3)
    b, _ = select_parameters(ad, X, rule="random", ratio=8 / 24, random_state=3)
    assert (a == b).all() and a[:24].sum() == 8
    rows = _rows(None)
    assert all(a[rows[u]].all() for u in ta.loc[0, "units"])


def test_linear_model_ranks_coefficients():
    from sklearn.datasets import load_iris

    Xi, yi = load_iris(return_X_y=True)
    est = LogisticRegression(max_iter=1000).fit(Xi, yi)
    ad = make_adapter(est)
    mask, table = select_parameters(ad, Xi, yi, rule="highest_outputs", ratio=0.25)
    assert mask.sum() == int(ad.n_params * 0.25)
    assert np.abs(ad.theta[mask]).min() >= np.abs(ad.theta[~mask]).max()
    mask, _ = select_parameters(ad, Xi[yi == 0], yi[yi == 0], rule="highest_gradients", ratio=0.25)
    G = ad.loss.gradient(ad.encode_target(yi[yi == 0]), ad.eta(ad.design(Xi[yi == 0])))
    grad = np.abs(ad.total_gradient(ad.design(Xi[yi == 0]), G))
    assert grad[mask].min() >= grad[~mask].max()


def test_user_net_untouched_and_no_hooks_left():
    net = _planted_mlp()
    before = [p.detach().clone() for p in net.parameters()]
    ad = make_adapter(TorchModel(net))
    for rule in RULES:
        select_parameters(ad, X, Y, rule=rule, ratio=0.3, random_state=0)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())
    for m in list(net.modules()) + list(ad.module.modules()):
        assert not m._forward_hooks


def test_callable_and_bad_input():
    ad = make_adapter(TorchModel(_planted_mlp()))
    mask, _ = select_parameters(ad, X, rule=lambda a, X, y: np.arange(a.n_params) < 5)
    assert mask.sum() == 5
    with pytest.raises(ValueError, match="boolean mask"):
        select_parameters(ad, X, rule=lambda a, X, y: np.ones(3))
    with pytest.raises(ValueError, match="selection must be"):
        select_parameters(ad, X, rule="biggest")
    with pytest.raises(ValueError, match="ratio"):
        select_parameters(ad, X, ratio=0.0)
    with pytest.raises(ValueError, match="targets"):
        select_parameters(ad, X, rule="highest_gradients")


def test_ranking_rules_are_deterministic_whatever_random_state():
    """The partial unit is filled with its largest weights, so a ranking rule selects the
    same J at every fit (random_state=None included); "random" still follows its seed."""
    net = _planted_mlp()
    with torch.no_grad():
        net[0].weight[2] = torch.tensor([0.1, -0.9, 0.5], dtype=torch.float64)
    ad = make_adapter(TorchModel(net))
    masks = [select_parameters(ad, X, Y, rule=rule, ratio=0.25, random_state=None)[0]
             for rule in ("highest_outputs", "highest_outputs", "highest_gradients", "highest_gradients")]
    assert np.array_equal(masks[0], masks[1]) and np.array_equal(masks[2], masks[3])
    extra = np.flatnonzero(masks[0][:24] & ~np.isin(np.arange(24), _rows(net)[1]))
    assert extra.tolist() == [7, 8]                            # |−0.9| and |0.5| of unit 2's fan-in
    a = select_parameters(ad, X, rule="random", ratio=0.25, random_state=1)[0]
    assert np.array_equal(a, select_parameters(ad, X, rule="random", ratio=0.25, random_state=1)[0])
