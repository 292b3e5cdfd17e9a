"""`lp_fit: logistic`: a logistic regression written into the head, known answers against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from loralens.errors import ConfigError
from loralens.models.head import ClassificationHead
from loralens.training.logistic_head import fit_logistic, set_linear_head


def _data(n_classes: int, n: int = 90, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 50, size=d) + rng.normal(size=d) * 10  # scales differ widely
    x[:, 0] += 2.0 * y
    return x, y


@pytest.mark.parametrize("n_classes", [2, 3, 4])
def test_the_folded_weights_are_the_standardised_probe(n_classes):
    x, y = _data(n_classes)
    w, b = fit_logistic(x, y, n_classes)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
    ref.fit(x, y)
    logits = x @ w.T + b
    np.testing.assert_array_equal(logits.argmax(1), ref.predict(x))
    p = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(p / p.sum(1, keepdims=True), ref.predict_proba(x), atol=1e-9)


def test_the_head_computes_the_linear_classifier_exactly():
    x, y = _data(3, d=8)
    w, b = fit_logistic(x, y, 3)
    torch.manual_seed(0)
    head = ClassificationHead(8, 3, proj_size=16).double()
    projector_rest = head.projector.weight[3:].clone()
    set_linear_head(head, w, b)
    out = head.classify(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, x @ w.T + b, rtol=1e-10, atol=1e-8)
    # the other projector units keep their initialisation, and their classifier columns learn at once
    assert torch.equal(head.projector.weight[3:], projector_rest)
    loss = torch.nn.functional.cross_entropy(head.classify(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    assert head.classifier.weight.grad[:, 3:].abs().sum() > 0


def test_absent_classes_are_never_predicted_and_bad_input_is_named():
    x, y = _data(3)
    keep = y != 1
    w, b = fit_logistic(x[keep], y[keep], 3)
    assert (w[1] == 0).all() and b[1] < -1e3
    assert 1 not in (x @ w.T + b).argmax(1)
    with pytest.raises(ConfigError, match="1 class"):
        fit_logistic(x[y == 0], y[y == 0], 3)
    with pytest.raises(ConfigError, match="do not match"):
        fit_logistic(x[:5], y, 3)
    with pytest.raises(ConfigError, match="projector_dim=2"):
        set_linear_head(ClassificationHead(6, 3, proj_size=2), *fit_logistic(x, y, 3))
    with pytest.raises(ConfigError, match="head of 3 classes on 6 features"):
        set_linear_head(ClassificationHead(6, 3, proj_size=8), np.zeros((3, 5)), np.zeros(3))
