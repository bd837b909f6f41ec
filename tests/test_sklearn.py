"""The preprocessing estimators as scikit-learn transformers: its own checks, pipelines, grid searches, feature
names, pandas output, and the same estimators without scikit-learn installed."""
import subprocess
import sys

import numpy as np
import pytest

from fastnorm.preprocessing import PCA, Standardizer, Whitening

sklearn = pytest.importorskip("sklearn")

# Each check an estimator fails on purpose, and why.
EXPECTED_FAILED_CHECKS = {
    "Standardizer": {
        "check_estimators_nan_inf": "transform lets NaN through as every kernel does (NaN in, NaN out); fit refuses "
                                    "NaN and infinity",
        "check_fit1d": "statistics over any axes: a 1-d array is the samples of one feature (axis=0)",
    },
    "PCA": {"check_estimators_nan_inf": "transform lets NaN through (NaN in, NaN out); fit refuses NaN and inf"},
    "Whitening": {"check_estimators_nan_inf": "transform lets NaN through (NaN in, NaN out); fit refuses NaN and "
                                              "inf"},
}


def _sklearn_at_least(version):
    return tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= version


@pytest.mark.skipif(not _sklearn_at_least((1, 6)), reason="expected_failed_checks needs scikit-learn >= 1.6")
@pytest.mark.parametrize("make", [Standardizer, PCA, Whitening], ids=lambda c: c.__name__)
def test_check_estimator(make):
    from sklearn.utils.estimator_checks import check_estimator
    expected = EXPECTED_FAILED_CHECKS[make.__name__]
    results = check_estimator(make(), expected_failed_checks=expected, on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed
    assert len(results) > 30 and len(expected) <= 3


def test_clone_get_and_set_params():
    from sklearn.base import clone
    pca = PCA(3, whiten=True, eps=1e-3)
    assert pca.get_params() == {"n_components": 3, "whiten": True, "eps": 1e-3}
    twin = clone(pca)
    assert twin is not pca and twin.get_params() == pca.get_params()
    assert pca.set_params(n_components=2) is pca and pca.n_components == 2
    with pytest.raises(ValueError):
        pca.set_params(components=2)
    s = Standardizer(axis=(0, 2), with_std=False)
    assert clone(s).get_params()["axis"] == (0, 2)


def test_pipeline_and_grid_search():
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    x, y = make_classification(200, 8, n_informative=4, random_state=0)
    pipe = make_pipeline(Standardizer(), PCA(), LogisticRegression())
    search = GridSearchCV(pipe, {"pca__n_components": [2, 4, 6]}, cv=3).fit(x, y)
    assert search.best_params_["pca__n_components"] in (2, 4, 6)
    assert search.score(x, y) > 0.7
    ending_in_pca = make_pipeline(Standardizer(), PCA(3)).fit(x)
    assert ending_in_pca.transform(x).shape == (200, 3)
    full_rank = np.random.default_rng(0).standard_normal((200, 8)) @ np.random.default_rng(1).standard_normal((8, 8))
    zca = make_pipeline(Standardizer(), Whitening()).fit(full_rank)
    np.testing.assert_allclose(np.cov(zca.transform(full_rank), rowvar=False), np.eye(8), atol=1e-3)


def test_feature_names_and_pandas_output():
    pd = pytest.importorskip("pandas")
    x = pd.DataFrame(np.random.default_rng(0).standard_normal((30, 3)), columns=["a", "b", "c"])
    s = Standardizer().fit(x)
    assert s.n_features_in_ == 3 and list(s.feature_names_in_) == ["a", "b", "c"]
    assert list(s.get_feature_names_out()) == ["a", "b", "c"]
    out = s.set_output(transform="pandas").transform(x)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(out.to_numpy().mean(axis=0), 0, atol=1e-12)
    p = PCA(2).set_output(transform="pandas").fit(x)
    assert list(p.transform(x).columns) == ["pca0", "pca1"]
    assert list(Whitening("pca").fit(x).get_feature_names_out()) == ["whitening0", "whitening1", "whitening2"]
    assert list(Whitening().fit(x.to_numpy()).get_feature_names_out()) == ["x0", "x1", "x2"]
    with pytest.raises(ValueError, match="feature names"):
        s.transform(x.rename(columns={"a": "z"}))


@pytest.mark.parametrize("make", [lambda: PCA(3), lambda: PCA(3, whiten=True), lambda: Whitening()],
                         ids=["pca", "pca-whiten", "zca"])
def test_float32_data_with_a_large_mean_stay_accurate(make):
    rng = np.random.default_rng(1)
    x64 = rng.standard_normal((400, 5)) @ rng.standard_normal((5, 5)) + 1e4
    x = x64.astype(np.float32)
    model = make().fit(x)
    got = model.transform(x)
    assert got.dtype == np.float32
    want = make().fit(x.astype(np.float64)).transform(x.astype(np.float64))
    # centring the float32 data around a float32 mean lost up to 5e-4 (the mean's rounding at 1e4)
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max())


def test_parameters_are_checked_when_fitting_not_when_constructing():
    bad = PCA(n_components=-1)  # scikit-learn's rule: the constructor only stores
    assert bad.n_components == -1
    with pytest.raises(ValueError, match="n_components"):
        bad.fit(np.ones((5, 3)))


def test_without_scikit_learn():
    code = """
import sys
sys.modules["sklearn"] = None  # as if it were not installed
import numpy as np, fastnorm
from fastnorm.preprocessing import PCA, Standardizer, Whitening, NotFittedError
x = np.random.default_rng(0).standard_normal((50, 4))
s = Standardizer().fit(x)
assert s.n_features_in_ == 4
np.testing.assert_allclose(s.transform(x).mean(axis=0), 0, atol=1e-12)
p = PCA(2)
assert p.get_params() == {"eps": 0.0, "n_components": 2, "whiten": False}
assert p.set_params(n_components=3).fit(x).transform(x).shape == (50, 3)
again = type(p)(**p.get_params())  # what clone does
assert again.get_params() == p.get_params()
assert Whitening().fit_transform(x).shape == (50, 4)
try:
    s.set_output(transform="pandas")
except ValueError as e:
    assert "scikit-learn" in str(e)
else:
    raise AssertionError("pandas output without scikit-learn")
try:
    Standardizer().transform(x)
except NotFittedError:
    pass
print(repr(p))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PCA(eps=0.0, n_components=3, whiten=False)"
