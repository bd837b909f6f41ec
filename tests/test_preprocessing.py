"""fastnorm.preprocessing: Standardizer, PCA, Whitening against float64 references and scikit-learn; partial_fit
over pieces equals fit on the whole; bad input."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as ref
from fastnorm.preprocessing import PCA, NotFittedError, Standardizer, Whitening


def correlated(rng, n, d, dtype=np.float64):
    """Rows with a full-rank, far-from-diagonal covariance and a non-zero mean; variances well above 1e-5."""
    mix = rng.standard_normal((d, d)) + 2 * np.eye(d)
    return (rng.standard_normal((n, d)) @ mix + rng.uniform(-5, 5, d)).astype(dtype)


# -- Standardizer ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis,kept", [
    ((200, 7), 0, (7,)),                         # per feature
    ((50, 8, 8, 3), 0, (8, 8, 3)),               # the mean image
    ((20, 3, 6, 5), (0, 2, 3), (3,)),            # per channel, NCHW
    ((20, 6, 5, 3), (0, 1, 2), (3,)),            # per channel, channels-last
    ((10, 4, 6), (0, 2), (4,)),
    ((10, 4, 6), (1,), (10, 6)),                 # kept axes not adjacent: the NumPy path
    ((30, 5), None, ()),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardizer_matches_reference(shape, axis, kept, dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 10).astype(dtype)
    s = Standardizer(axis=axis).fit(x)
    assert s.mean_.shape == kept and s.scale_.shape == kept
    y = s.transform(x)
    assert y.dtype == dtype and y.shape == x.shape
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref.standardize(x, axis), rtol=tol, atol=tol)
    np.testing.assert_allclose(s.inverse_transform(y), x, rtol=tol, atol=tol * 10)


def test_standardizer_options_and_out():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, 4)) * [1, 2, 3, 4] + [5, 6, 7, 8]
    only_mean = Standardizer(with_std=False).fit(x)
    assert only_mean.scale_ is None
    np.testing.assert_allclose(only_mean.transform(x), x - x.mean(axis=0), atol=1e-12)
    only_std = Standardizer(with_mean=False).fit(x)
    np.testing.assert_allclose(only_std.transform(x), x / x.std(axis=0), rtol=1e-12)
    unbiased = Standardizer(ddof=1).fit(x)
    np.testing.assert_allclose(unbiased.var_, x.var(axis=0, ddof=1), rtol=1e-12)
    out = np.empty_like(x)
    assert Standardizer().fit(x).transform(x, out=out) is out
    ints = np.arange(40).reshape(10, 4)
    assert Standardizer().fit(ints).transform(ints).dtype == np.float64


def test_standardizer_constant_feature_is_centered_not_nan():
    x = np.column_stack([np.full(10, 3.0), np.arange(10.0)])
    y = Standardizer().fit_transform(x)
    assert np.isfinite(y).all() and (y[:, 0] == 0).all()


def test_standardizer_does_not_modify_input():
    x = np.random.default_rng(2).standard_normal((20, 3)).astype(np.float32)
    before = x.copy()
    Standardizer().fit(x).transform(x)
    np.testing.assert_array_equal(x, before)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_standardizer_partial_fit_equals_fit(data):
    d = data.draw(st.integers(1, 5))
    sizes = data.draw(st.lists(st.integers(0, 30), min_size=1, max_size=5).filter(lambda s: s[0] and sum(s) >= 2))
    x = data.draw(hnp.arrays(np.float64, (sum(sizes), d), elements=st.floats(-1e3, 1e3)))
    whole = Standardizer().fit(x)
    pieces = Standardizer()
    start = 0
    for size in sizes:
        pieces.partial_fit(x[start:start + size])
        start += size
    assert pieces.n_samples_seen_ == whole.n_samples_seen_ == len(x)
    np.testing.assert_allclose(pieces.mean_, whole.mean_, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(pieces.var_, whole.var_, rtol=1e-9, atol=1e-6)


def test_standardizer_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.preprocessing")
    x = correlated(np.random.default_rng(3), 500, 6)
    x[:, 2] = 1.5  # a constant feature
    ours, theirs = Standardizer().fit(x), sklearn.StandardScaler().fit(x)
    np.testing.assert_allclose(ours.mean_, theirs.mean_, rtol=1e-12)
    np.testing.assert_allclose(ours.var_, theirs.var_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.scale_, theirs.scale_, rtol=1e-10)
    np.testing.assert_allclose(ours.transform(x), theirs.transform(x), rtol=1e-10, atol=1e-12)


def test_standardizer_bad_input():
    with pytest.raises(NotFittedError, match="not fitted"):
        Standardizer().transform(np.ones((3, 2)))
    s = Standardizer().fit(np.random.default_rng(0).standard_normal((10, 3)))
    with pytest.raises(ValueError, match="X has 5 features, but Standardizer is expecting 3"):  # scikit-learn's words
        s.transform(np.ones((4, 5)))
    with pytest.raises(ValueError, match="x: shape"):
        s.partial_fit(np.ones((4, 3, 1)))
    bad = np.ones((5, 2))
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Standardizer().fit(bad)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        Standardizer().fit(bad)
    with pytest.raises(ValueError, match="ddof"):  # parameters are checked by fit (scikit-learn's rule)
        Standardizer(ddof=-1).fit(np.ones((4, 2)))
    with pytest.raises(ValueError, match="0 sample"):
        Standardizer().fit(np.ones((0, 3)))
    with pytest.raises(ValueError, match="more than ddof=4 values"):
        Standardizer(ddof=4).fit(np.ones((3, 3)))
    with pytest.raises(ValueError, match="axis"):
        Standardizer(axis=3).fit(np.ones((4, 2)))
    with pytest.raises(ValueError, match="Complex data not supported"):  # scikit-learn's error for estimators
        Standardizer().fit(np.ones((4, 2), dtype=complex))


# -- PCA ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("whiten", [False, True])
def test_pca_matches_reference(whiten):
    x = correlated(np.random.default_rng(4), 300, 8)
    p = PCA(3, whiten=whiten).fit(x)
    components, variances, projected = ref.pca(x, 3)
    np.testing.assert_allclose(p.components_, components, atol=1e-9)
    np.testing.assert_allclose(p.explained_variance_, variances, rtol=1e-9)
    expected = projected / np.sqrt(variances) if whiten else projected
    np.testing.assert_allclose(p.transform(x), expected, rtol=1e-8, atol=1e-8)
    total = np.var(x, axis=0, ddof=1).sum()
    np.testing.assert_allclose(p.explained_variance_ratio_, variances / total, rtol=1e-9)
    if whiten:
        np.testing.assert_allclose(np.cov(p.transform(x), rowvar=False), np.eye(3), atol=1e-9)


@pytest.mark.parametrize("whiten", [False, True])
def test_pca_matches_scikit_learn(whiten):
    decomposition = pytest.importorskip("sklearn.decomposition")
    x = correlated(np.random.default_rng(5), 400, 10)
    for k in (4, None, 0.9):
        ours = PCA(k, whiten=whiten).fit(x)
        theirs = decomposition.PCA(k, whiten=whiten, svd_solver="full").fit(x)
        assert ours.n_components_ == theirs.n_components_
        np.testing.assert_allclose(ours.explained_variance_, theirs.explained_variance_, rtol=1e-9)
        np.testing.assert_allclose(ours.explained_variance_ratio_, theirs.explained_variance_ratio_, rtol=1e-9)
        np.testing.assert_allclose(ours.singular_values_, theirs.singular_values_, rtol=1e-9)
        # components are defined up to sign; scikit-learn's sign rule has changed across versions
        sign = np.sign((ours.components_ * theirs.components_).sum(axis=1))
        np.testing.assert_allclose(ours.components_ * sign[:, None], theirs.components_, atol=1e-8)
        np.testing.assert_allclose(ours.transform(x) * sign, theirs.transform(x), rtol=1e-7, atol=1e-8)


def test_pca_images_float32_and_inverse():
    rng = np.random.default_rng(6)
    x = correlated(rng, 200, 48, np.float32).reshape(200, 4, 4, 3)
    full = PCA().fit(x)
    assert full.n_components_ == 48 and full.components_.shape == (48, 48)
    y = full.transform(x)
    assert y.dtype == np.float32 and y.shape == (200, 48)
    back = full.inverse_transform(y)
    assert back.shape == x.shape
    np.testing.assert_allclose(back, x, rtol=1e-4, atol=1e-4)
    white = PCA(10, whiten=True).fit(x)
    np.testing.assert_allclose(white.inverse_transform(white.transform(x)),
                               PCA(10).fit(x).inverse_transform(PCA(10).fit(x).transform(x)), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("model", [lambda: PCA(4, whiten=True), lambda: Whitening("zca"), lambda: Whitening("pca")])
def test_partial_fit_equals_fit(model):
    x = correlated(np.random.default_rng(7), 600, 12)
    whole, pieces = model().fit(x), model()
    for part in np.array_split(x, [1, 50, 51, 400]):
        pieces.partial_fit(part)
    assert pieces.n_samples_seen_ == 600
    np.testing.assert_allclose(pieces.mean_, whole.mean_, rtol=1e-12)
    np.testing.assert_allclose(pieces.covariance_, whole.covariance_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pieces.transform(x), whole.transform(x), rtol=1e-7, atol=1e-9)


def test_fit_in_pieces_of_a_large_array():
    """fit itself adds rows in pieces of about 4 MiB; with many features that is many pieces."""
    x = correlated(np.random.default_rng(8), 3000, 300)
    p = Whitening("pca", eps=0).fit(x)
    np.testing.assert_allclose(p.covariance_, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)


# -- Whitening ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["pca", "zca"])
def test_whitened_covariance_is_identity(method):
    x = correlated(np.random.default_rng(9), 2000, 16, np.float32)
    w = Whitening(method).fit(x)
    y = w.transform(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(np.cov(y.astype(np.float64), rowvar=False), np.eye(16), atol=1e-3)
    np.testing.assert_allclose(w.inverse_transform(y), x, rtol=1e-3, atol=1e-3)


def test_zca_is_symmetric_and_closest_to_the_data():
    x = correlated(np.random.default_rng(10), 1000, 6)
    zca, pca_ = Whitening("zca").fit(x), Whitening("pca").fit(x)
    np.testing.assert_allclose(zca.whitening_matrix_, zca.whitening_matrix_.T, atol=1e-12)
    centered = x - x.mean(axis=0)
    # ZCA is the whitening transform that changes the data least (Bell & Sejnowski; Kessy et al. 2018)
    assert np.linalg.norm(zca.transform(x) - centered) < np.linalg.norm(pca_.transform(x) - centered)
    zca_images = Whitening("zca").fit(x.reshape(1000, 2, 3))
    assert zca_images.transform(x.reshape(1000, 2, 3)).shape == (1000, 2, 3)


def test_eps_bounds_degenerate_directions():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((100, 3))
    x = np.column_stack([x, x[:, 0] + x[:, 1]])  # rank 3 of 4
    y = Whitening("zca", eps=1e-2).fit(x).transform(x)
    assert np.isfinite(y).all() and np.abs(y).max() < 100
    p = PCA(whiten=True).fit(x)
    assert np.isfinite(p.transform(x)).all()


def test_covariance_models_bad_input():
    x = correlated(np.random.default_rng(12), 20, 5)
    for model in (PCA(2), Whitening()):
        with pytest.raises(NotFittedError, match="not fitted"):
            model.transform(x)
        with pytest.raises(NotFittedError):
            model.mean_  # noqa: B018
        model.fit(x)
        with pytest.raises(ValueError, match="X has 4 features, but .* is expecting 5"):
            model.transform(x[:, :4])
        with pytest.raises(ValueError, match="ndim >= 2"):
            model.fit(x[0])
        bad = x.copy()
        bad[5, 2] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            type(model)().fit(bad)
        with pytest.raises(ValueError, match="at least 2 samples"):
            type(model)().fit(x[:1])
    with pytest.raises(ValueError, match="n_components: 6 is more than min"):
        PCA(6).fit(x)
    with pytest.raises(ValueError, match="n_components: 5 is more than min"):
        PCA(5).fit(x[:4])
    with pytest.raises(ValueError, match="n_components: expected >= 1"):
        PCA(0).fit(x)
    with pytest.raises(ValueError, match="n_components: a float"):
        PCA(1.5).fit(x)
    with pytest.raises(TypeError, match="n_components"):
        PCA("mle").fit(x)
    with pytest.raises(ValueError, match="method: expected 'pca' or 'zca'"):
        Whitening("cholesky").fit(x)
    with pytest.raises(ValueError, match="eps"):
        Whitening(eps=-1).fit(x)
