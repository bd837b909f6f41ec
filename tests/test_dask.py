"""fastnorm.dask: statistics of chunked arrays against the in-memory ones, the same bits for any number of workers,
fitted estimators and lazy transforms."""
import os

import numpy as np
import pytest

import fastnorm
from fastnorm.preprocessing import PCA, Standardizer, Whitening

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
fd = pytest.importorskip("fastnorm.dask")


def _images(dtype=np.float32, offset=1e4, seed=0):
    # mean / std = 1e4: float32 sums in float32 lose the variance here
    return (np.random.default_rng(seed).standard_normal((60, 3, 6, 5)) + offset).astype(dtype)


def _same(a, b):
    return all(np.asarray(p).tobytes() == np.asarray(q).tobytes() for p, q in zip(a, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [(0, 2, 3), 0, None, (0, 1, 2, 3), (1,)])
def test_moments_equal_the_in_memory_ones(dtype, axis):
    x = _images(dtype)
    d = da.from_array(x, chunks=(7, 2, 4, 5))
    got, want = fd.moments(d, axis), fastnorm.moments(x, axis)
    assert got.mean.shape == want.mean.shape and int(np.max(got.count)) == int(np.max(want.count))
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-12)
    np.testing.assert_allclose(got.m2, want.m2, rtol=1e-10)  # m2 of values 1e4 +- 1: cancellation in float64
    exact = np.asarray(x, np.float64)
    red = tuple(range(x.ndim)) if axis is None else axis
    np.testing.assert_allclose(got.m2 / got.count, exact.var(axis=red), rtol=1e-10)


def test_float32_variance_far_from_zero_is_exact_where_dask_var_is_not():
    x = _images(np.float32, offset=1e4)
    d = da.from_array(x, chunks=(7, 3, 6, 5))
    exact = x.astype(np.float64).var(axis=(0, 2, 3))
    ours = fd.moments(d, (0, 2, 3)).m2 / (60 * 30)
    np.testing.assert_allclose(ours, exact, rtol=1e-10)
    assert np.abs(d.var(axis=(0, 2, 3)).compute() / exact - 1).max() > 1e-6  # the accumulation in float32


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_same_bits_for_any_number_of_workers(workers):
    x = _images()
    d = da.from_array(x, chunks=(5, 3, 3, 5))
    reference = fd.moments(d, (0, 2, 3), split_every=3)
    reference_s = fd.scatter(d)
    with dask.config.set(scheduler="threads", num_workers=workers):
        assert _same(fd.moments(d, (0, 2, 3), split_every=3), reference)
        assert _same(fd.scatter(d), reference_s)


@pytest.fixture
def environment_kept():
    """Restores os.environ afterwards: the cluster's nanny sets OMP_NUM_THREADS and the BLAS thread counts to 1 in
    this process (for its workers), which later subprocesses of the suite would inherit."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_on_a_local_cluster_with_worker_processes(environment_kept):
    distributed = pytest.importorskip("dask.distributed")
    x = _images()
    d = da.from_array(x, chunks=(5, 3, 6, 5))
    reference = fd.moments(d, (0, 2, 3), split_every=4)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c):
        assert _same(fd.moments(d, (0, 2, 3), split_every=4), reference)
        y = Standardizer(axis=(0, 2, 3)).fit(d).transform(d).compute()
    np.testing.assert_allclose(y, Standardizer(axis=(0, 2, 3)).fit(x).transform(x), rtol=1e-5, atol=1e-5)


def test_scatter_equals_the_in_memory_one():
    x = _images(np.float64)[:, :2].reshape(60, -1)
    d = da.from_array(x, chunks=(11, 17))
    got, want = fd.scatter(d), fastnorm.scatter(x)
    assert got.count == 60
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-12)
    np.testing.assert_allclose(got.scatter, want.scatter, rtol=1e-9, atol=1e-9 * np.abs(want.scatter).max())


@pytest.mark.parametrize("make", [lambda: Standardizer(axis=(0, 2, 3)), lambda: Standardizer(axis=0),
                                  lambda: PCA(n_components=4), lambda: PCA(whiten=True),
                                  lambda: Whitening("zca", eps=1e-3), lambda: Whitening("pca")])
def test_estimators_fit_and_transform_dask_arrays_lazily(make):
    x = np.ascontiguousarray(_images(np.float32, offset=3)[:, :, :2, :2])  # 12 features, 60 samples
    d = da.from_array(x, chunks=(13, 2, 2, 1))
    in_memory, chunked = make().fit(x), make().fit(d)
    y = chunked.transform(d)
    assert fd.is_dask_array(y)
    want = in_memory.transform(x)
    assert y.shape == want.shape and y.dtype == want.dtype
    np.testing.assert_allclose(y.compute(), want, rtol=2e-4, atol=2e-4)
    if isinstance(in_memory, Standardizer):
        np.testing.assert_allclose(chunked.inverse_transform(y).compute(), x, rtol=1e-5, atol=1e-5)


def test_partial_fit_mixes_chunked_and_in_memory_batches():
    x = _images(np.float64, offset=2)
    s = Standardizer(axis=(0, 2, 3)).partial_fit(da.from_array(x[:25], chunks=(5, 3, 6, 5))).partial_fit(x[25:])
    want = Standardizer(axis=(0, 2, 3)).fit(x)
    np.testing.assert_allclose(s.mean_, want.mean_, rtol=1e-12)
    np.testing.assert_allclose(s.var_, want.var_, rtol=1e-12)


def test_lazy_activations_and_batch_norm():
    x = _images(np.float32, offset=0)
    d = da.from_array(x, chunks=(13, 2, 6, 5))
    y = fd.gelu(d)
    assert fd.is_dask_array(y)
    assert y.compute().tobytes() == fastnorm.gelu(x).tobytes()
    y = fd.batch_norm(d, gamma=np.ones(3), beta=np.zeros(3), activation="relu")
    np.testing.assert_allclose(y.compute(), fastnorm.batch_norm(x, activation="relu"), rtol=1e-5, atol=1e-5)


def test_lazy_row_and_sample_norms():
    x = _images(np.float32, offset=2)
    d = da.from_array(x, chunks=(13, 2, 3, 5))
    g = np.linspace(0.5, 1.5, 5)
    for lazy, want in ((fd.layer_norm(d, g, None), fastnorm.layer_norm(x, g)),
                       (fd.layer_norm(d, axis=(2, 3)), fastnorm.layer_norm(x, axis=(2, 3))),
                       (fd.rms_norm(d, g, activation="relu"), fastnorm.rms_norm(x, g, activation="relu")),
                       (fd.group_norm(d, 3), fastnorm.group_norm(x, 3)),
                       (fd.instance_norm(d, axis=-1), fastnorm.instance_norm(x, axis=-1))):
        assert fd.is_dask_array(lazy)
        assert lazy.compute().tobytes() == want.tobytes()


def test_missing_dask_names_the_extra():
    import subprocess
    import sys
    code = "import sys; sys.modules['dask'] = None; import fastnorm.dask"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode != 0 and 'pip install "fastnorm[dask]"' in run.stderr


def test_bad_input():
    with pytest.raises(TypeError, match="x: expected a dask.array.Array"):
        fd.moments(np.ones(3))
    with pytest.raises(ValueError, match="split_every"):
        fd.scatter(da.ones((4, 3)), split_every=1)
    with pytest.raises(AttributeError):
        fd.not_an_activation


def test_dataset_stats_example_runs(environment_kept):
    pytest.importorskip("dask.distributed")
    import subprocess
    import sys
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "dataset_stats.py")
    run = subprocess.run([sys.executable, example, "--images", "600", "--chunk", "200", "--workers", "1"],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "per-channel mean" in run.stdout and "ZCA of 16 x 16 x 3 = 768 features fitted on 600 images" in run.stdout
