"""Tests for tff_localsgd.data: generation, preprocessing, partitions, cache."""

import dataclasses
import os

import numpy as np
import pytest
from scipy.spatial import distance


from tff_localsgd import data  # pylint: disable=g-import-not-at-top
from tff_localsgd import theory  # pylint: disable=g-import-not-at-top
from tff_localsgd.config import ConfigError, ExperimentConfig  # pylint: disable=g-import-not-at-top


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
  """No test may reach the network: a download attempt fails the test."""

  def fail(name):
    raise AssertionError(f'test tried to download {name}')

  monkeypatch.setattr(data, '_download_keras', fail)


def synthetic(**kwargs):
  values = dict(dataset='synthetic', num_examples=256, input_dim=16,
                output_dim=2, num_clients=4, seed=3)
  values.update(kwargs)
  return ExperimentConfig(**values).validate()


def assert_same(a, b):
  """Bit-identical FederatedData."""
  for f in dataclasses.fields(data.FederatedData):
    x, y = getattr(a, f.name), getattr(b, f.name)
    if isinstance(x, tuple):
      assert len(x) == len(y)
      for u, v in zip(x, y):
        np.testing.assert_array_equal(u, v, strict=True)
    elif isinstance(x, np.ndarray):
      np.testing.assert_array_equal(x, y, strict=True)
    else:
      assert x == y


def arrays(dataset):
  """(x_train, y_train, x_test, y_test) of a data.Dataset."""
  return (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)


def is_partition(parts, n):
  joined = np.concatenate(parts)
  return len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


# Synthetic data.


def test_synthetic_shapes_unit_norm_and_properties():
  fed = data.load_federated_data(synthetic())
  assert fed.num_classes is None
  assert fed.input_shape == (16,)
  assert fed.output_dim == 2
  assert fed.num_examples == 256 and sum(fed.client_sizes) == 256
  assert len(fed.client_x) == 4
  for x, y in zip(fed.client_x, fed.client_y):
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert y.shape == (len(x), 2)
  assert fed.train_x.shape == (256, 16)
  np.testing.assert_array_equal(fed.train_x[:fed.client_sizes[0]],
                                fed.client_x[0])
  np.testing.assert_allclose(np.linalg.norm(fed.train_x, axis=1), 1.0,
                             rtol=0, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(fed.test_x, axis=1), 1.0,
                             rtol=0, atol=1e-6)
  assert fed.test_x.shape == (64, 16) and fed.test_y.shape == (64, 2)
  assert 0 < fed.min_pairwise_distance < 2


def test_synthetic_is_uniform_on_sphere():
  x, *_ = data.synthetic_data(20000, 3, 1, 'noise', data.stream(0, 1))
  # Uniform on S^2: mean 0, second moment I/3 (std errors ~0.004 here).
  np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=0.02)
  np.testing.assert_allclose(x.T @ x / len(x), np.eye(3) / 3, atol=0.02)


def test_same_config_bit_identical_different_seed_differs():
  for partition in ('iid', 'dirichlet', 'shards'):
    config = synthetic(partition=partition)
    a = data.load_federated_data(config)
    assert_same(a, data.load_federated_data(config))
    b = data.load_federated_data(dataclasses.replace(config, seed=4))
    assert not np.array_equal(a.train_x, b.train_x)
    assert not np.array_equal(a.client_x[0], b.client_x[0])


def test_partition_does_not_change_the_data():
  iid = data.load_dataset(synthetic(partition='iid'))
  shards = data.load_dataset(synthetic(partition='shards', num_clients=2))
  for a, b in zip(arrays(iid), arrays(shards)):
    np.testing.assert_array_equal(a, b)


def test_teacher_targets_unit_variance():
  fed = data.load_federated_data(synthetic(num_examples=8000, output_dim=3))
  # Scaled by the empirical std of the training targets: exact.
  np.testing.assert_allclose(fed.train_y.std(axis=0), 1.0, atol=1e-5)
  # Test targets share the scale; 2000 points: std error ~0.02 per coordinate.
  np.testing.assert_allclose(fed.test_y.std(axis=0), 1.0, atol=0.1)


def test_teacher_targets_are_one_function_of_x():
  # Draw order (teacher, train x, test x): a larger n extends a smaller one,
  # and the small run's test x are the larger run's next training x.
  small = arrays(data.load_dataset(synthetic(num_examples=64)))
  large = arrays(data.load_dataset(synthetic(num_examples=96)))
  np.testing.assert_array_equal(small[0], large[0][:64])
  np.testing.assert_array_equal(small[2], large[0][64:80])
  # Same teacher up to the per-coordinate scale: one ratio for all points.
  ratio = np.concatenate([small[1], small[3]]) / large[1][:80]
  np.testing.assert_allclose(ratio, np.broadcast_to(ratio[0], ratio.shape),
                             rtol=1e-5)
  assert not np.allclose(large[1][:, 0], large[1][:, 1])


def test_noise_targets():
  noise = data.load_dataset(
      synthetic(target='noise', num_examples=4000, output_dim=2))
  _, y, x_test, y_test = arrays(noise)
  assert x_test is None and y_test is None and noise.num_classes is None
  # i.i.d. N(0, 1): mean std error ~0.016, std std error ~0.011.
  np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=0.07)
  np.testing.assert_allclose(y.std(axis=0), 1.0, atol=0.05)
  fed = data.load_federated_data(synthetic(target='noise'))
  assert fed.test_x is None and fed.test_y is None


def test_pseudo_labels_are_deciles_of_first_target():
  y = data.stream(0, 9).standard_normal((1000, 2))
  labels = data.pseudo_labels(y)
  np.testing.assert_array_equal(np.bincount(labels), np.full(10, 100))
  order = np.argsort(y[:, 0])
  assert np.all(np.diff(labels[order]) >= 0)


def test_synthetic_non_iid_uses_pseudo_labels():
  fed = data.load_federated_data(synthetic(num_examples=1000,
                                           partition='shards',
                                           num_clients=10,
                                           shards_per_client=1))
  # One decile shard per client: first-coordinate ranges do not overlap.
  ranges = sorted((y[:, 0].min(), y[:, 0].max()) for y in fed.client_y)
  assert all(hi < lo for (_, hi), (lo, _) in zip(ranges, ranges[1:]))


# min_pairwise_distance.


def test_min_pairwise_distance_matches_pdist():
  rng = np.random.default_rng(0)
  for n, d in ((2, 3), (7, 5), (600, 10), (1100, 4)):  # > 1 block of rows
    x = rng.standard_normal((n, d)).astype(np.float32)
    expected = distance.pdist(x.astype(np.float64)).min()
    np.testing.assert_allclose(data.min_pairwise_distance(x), expected,
                               rtol=1e-12)


def test_min_pairwise_distance_close_points_and_duplicates():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((700, 8)) + 100.0  # large norms: cancellation
  x[650] = x[3] + 1e-7
  expected = distance.pdist(x).min()
  assert expected < 1e-6
  np.testing.assert_allclose(data.min_pairwise_distance(x), expected,
                             rtol=1e-6)
  x[600] = x[20]
  assert data.min_pairwise_distance(x) == 0.0


def test_min_pairwise_distance_images_flattened_and_single_point():
  x = np.random.default_rng(2).random((50, 4, 4, 1))
  np.testing.assert_allclose(data.min_pairwise_distance(x),
                             distance.pdist(x.reshape(50, -1)).min(),
                             rtol=1e-12)
  assert data.min_pairwise_distance(x[:1]) == np.inf


def test_min_pairwise_distance_subsamples_with_rng():
  x = np.random.default_rng(3).standard_normal((300, 5))
  with pytest.raises(ValueError, match='rng'):
    data.min_pairwise_distance(x, max_points=100)
  got = data.min_pairwise_distance(x, max_points=100,
                                   rng=np.random.default_rng(7))
  keep = np.sort(np.random.default_rng(7).choice(300, 100, replace=False))
  np.testing.assert_allclose(got, distance.pdist(x[keep]).min(), rtol=1e-12)
  assert got >= distance.pdist(x).min()


def test_federated_delta_is_over_all_training_inputs():
  fed = data.load_federated_data(synthetic(num_examples=300))
  np.testing.assert_allclose(fed.min_pairwise_distance,
                             distance.pdist(fed.train_x.astype(np.float64))
                             .min(), rtol=1e-12)


# Partitions.


def labels_with(class_sizes):
  return np.repeat(np.arange(len(class_sizes)), class_sizes)


def histograms(labels, parts):
  num_classes = labels.max() + 1
  return np.array([np.bincount(labels[p], minlength=num_classes) for p in parts])


def test_iid_partition():
  labels = labels_with([30, 40, 33])
  for num_clients in (1, 4, 7, 103):
    parts = data.partition(labels, num_clients, 'iid', alpha=1.0,
                           shards_per_client=2, rng=np.random.default_rng(0))
    assert len(parts) == num_clients and is_partition(parts, 103)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
  # Seeded order, not sorted; same rng seed, same split.
  again = data.partition(labels, 7, 'iid', alpha=1.0, shards_per_client=2,
                         rng=np.random.default_rng(0))
  first = data.partition(labels, 7, 'iid', alpha=1.0, shards_per_client=2,
                         rng=np.random.default_rng(0))
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert any(np.any(np.diff(p) < 0) for p in first)


def test_dirichlet_partition_skew_follows_alpha():
  labels = labels_with([200] * 20)
  global_hist = np.bincount(labels) / len(labels)

  def split(alpha):
    parts = data.partition(labels, 4, 'dirichlet', alpha=alpha,
                           shards_per_client=2, rng=np.random.default_rng(5))
    assert is_partition(parts, len(labels))
    return histograms(labels, parts)

  skewed, uniform = split(0.01), split(1000.0)
  # Share of each class on its largest client: ~1 for tiny alpha (each class
  # lives on one client), ~1/4 for huge alpha.
  assert (skewed.max(axis=0) / 200).mean() > 0.95
  assert (uniform.max(axis=0) / 200).mean() < 0.35
  # Per-client label histograms: far from global vs. close to it (TV).
  tv = lambda h: 0.5 * np.abs(h / h.sum(1, keepdims=True) - global_hist).sum(1)
  assert tv(skewed).mean() > 0.5
  assert tv(uniform).max() < 0.05


def test_dirichlet_empty_client_raises_naming_alpha():
  labels = labels_with([20, 20])
  with pytest.raises(ConfigError) as info:
    data.partition(labels, 30, 'dirichlet', alpha=0.01, shards_per_client=2,
                   rng=np.random.default_rng(0))
  assert info.value.field == 'dirichlet_alpha'
  assert 'no examples' in str(info.value)


def test_shards_partition_within_classes():
  # 6 clients x 2 shards = 12 shards of 10; every class size is a multiple of
  # 10, so each shard is one class and each client has <= 2 labels.
  labels = labels_with([30, 20, 40, 10, 20])
  labels = labels[np.random.default_rng(0).permutation(len(labels))]
  for seed in range(5):
    parts = data.partition(labels, 6, 'shards', alpha=1.0,
                           shards_per_client=2,
                           rng=np.random.default_rng(seed))
    assert is_partition(parts, 120)
    assert [len(p) for p in parts] == [20] * 6
    distinct = [len(np.unique(labels[p])) for p in parts]
    assert max(distinct) <= 2


def test_empty_client_raises_naming_num_clients():
  labels = labels_with([2, 1])
  for scheme in ('iid', 'shards'):
    with pytest.raises(ConfigError) as info:
      data.partition(labels, 5, scheme, alpha=1.0, shards_per_client=1,
                     rng=np.random.default_rng(0))
    assert info.value.field == 'num_clients'
  with pytest.raises(ConfigError) as info:
    data.partition(labels, 2, 'nope', alpha=1.0, shards_per_client=1,
                   rng=np.random.default_rng(0))
  assert info.value.field == 'partition'


# Digits (bundled with sklearn: offline).


def digits(**kwargs):
  values = dict(dataset='digits', num_examples=0, num_clients=5, seed=1)
  values.update(kwargs)
  return ExperimentConfig(**values).validate()


def test_digits_mlp():
  fed = data.load_federated_data(digits())
  assert fed.num_classes == 10 and fed.output_dim == 10
  assert fed.num_examples == 1797 - 359 and len(fed.test_x) == 359
  assert fed.input_shape == (64,)
  np.testing.assert_allclose(np.linalg.norm(fed.train_x, axis=1), 1.0,
                             rtol=0, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(fed.test_x, axis=1), 1.0,
                             rtol=0, atol=1e-6)
  for y in (fed.train_y, fed.test_y):
    assert y.dtype == np.float32
    assert set(np.unique(y)) == {0.0, 1.0}
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)
  assert set(np.argmax(fed.test_y, axis=1)) == set(range(10))


def test_digits_cnn_and_subsample():
  x, y, x_test, y_test = arrays(data.load_dataset(digits(model='cnn')))
  assert x.shape == (1438, 8, 8, 1) and x_test.shape == (359, 8, 8, 1)
  assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
  # Values are k / 16.
  np.testing.assert_array_equal(x * 16, np.round(x * 16))
  sub = arrays(data.load_dataset(digits(model='cnn', num_examples=100)))
  assert sub[0].shape == (100, 8, 8, 1) and sub[1].shape == (100, 10)
  # A subsample without replacement of the same training set; same test set.
  rows = {r.tobytes() for r in x.reshape(len(x), -1)}
  assert all(r.tobytes() in rows for r in sub[0].reshape(100, -1))
  keep = data._subsample(1438, 100, 'digits', np.random.default_rng(0))
  assert len(np.unique(keep)) == 100 and keep.max() < 1438
  np.testing.assert_array_equal(sub[2], x_test)
  np.testing.assert_array_equal(sub[3], y_test)
  with pytest.raises(ConfigError) as info:
    data.load_dataset(digits(num_examples=5000))
  assert info.value.field == 'num_examples'


# digits_binary: the digits as a +-1 regression task in the theory's setting.


def sklearn_split(seed, num_examples):
  """sklearn's digits through the data stream as the loader documents it: a
  permutation, its first 20% the test set, then a subsample of the rest.
  Returns (train images, train digits, test images, test digits)."""
  from sklearn.datasets import load_digits
  images, digits_ = load_digits(return_X_y=True)
  rng = data.stream(seed, data.DATA_STREAM)
  order = rng.permutation(len(images))
  test, train = order[:359], order[359:]
  if num_examples:
    train = train[rng.choice(len(train), num_examples, replace=False)]
  return images[train], digits_[train], images[test], digits_[test]


def binary(**kwargs):
  values = dict(dataset='digits_binary', num_examples=300, num_clients=4,
                partition='dirichlet', dirichlet_alpha=1.0, seed=2)
  values.update(kwargs)
  return ExperimentConfig(**values).validate()


def test_digits_binary_unit_norm_and_targets_match_sklearn():
  ds = data.load_dataset(binary())
  images, digits_, test_images, test_digits = sklearn_split(2, 300)
  assert ds.num_classes is None  # regression: loss only, no argmax accuracy
  for x, raw, y, d in ((ds.x_train, images, ds.y_train, digits_),
                       (ds.x_test, test_images, ds.y_test, test_digits)):
    assert x.shape == (len(raw), 64) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x.astype(np.float64), axis=1),
                               1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        x, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=0,
        atol=1e-7)
    assert y.shape == (len(raw), 1) and y.dtype == np.float32
    np.testing.assert_array_equal(y[:, 0], [1.0 if v >= 5 else -1.0
                                            for v in d])
    assert set(np.unique(y)) == {-1.0, 1.0}
  assert len(ds.x_test) == 359
  np.testing.assert_array_equal(ds.labels, digits_)


def test_digits_binary_is_digits_with_binary_targets():
  # The same images, split and subsample as the mlp digits, bit for bit.
  for num_examples in (0, 100):
    multi = data.load_dataset(digits(num_examples=num_examples, seed=2))
    ds = data.load_dataset(binary(num_examples=num_examples))
    np.testing.assert_array_equal(ds.x_train, multi.x_train, strict=True)
    np.testing.assert_array_equal(ds.x_test, multi.x_test, strict=True)
    np.testing.assert_array_equal(ds.labels, np.argmax(multi.y_train, axis=1))
    np.testing.assert_array_equal(
        ds.y_test[:, 0], np.where(np.argmax(multi.y_test, axis=1) >= 5, 1, -1))
  assert len(ds.x_train) == 100 and len(multi.x_train) == 100


def test_existing_digits_match_sklearn_through_the_stream():
  # Pins the digits loader (the stream ids and draw order) independently.
  ds = data.load_dataset(digits(num_examples=200, seed=5, model='cnn'))
  images, digits_, test_images, test_digits = sklearn_split(5, 200)
  np.testing.assert_array_equal(ds.x_train[..., 0] * 16,
                                images.reshape(-1, 8, 8))
  np.testing.assert_array_equal(ds.x_test[..., 0] * 16,
                                test_images.reshape(-1, 8, 8))
  np.testing.assert_array_equal(ds.labels, digits_)
  np.testing.assert_array_equal(np.argmax(ds.y_test, axis=1), test_digits)


def test_digits_binary_seeded():
  config = binary()
  a = data.load_federated_data(config)
  assert_same(a, data.load_federated_data(config))
  b = data.load_federated_data(dataclasses.replace(config, seed=3))
  rows = lambda x: {r.tobytes() for r in x}
  assert rows(a.train_x) != rows(b.train_x)  # another subsample
  assert not np.array_equal(a.test_x, b.test_x)  # and another test split
  full = data.load_federated_data(binary(num_examples=0))
  assert full.num_examples == 1438 and len(full.test_x) == 359


def client_digits(fed, ds):
  """Each client's digits, found by its rows in the unpartitioned data (the
  digits images are distinct)."""
  digit_of = {x.tobytes(): d for x, d in zip(ds.x_train, ds.labels)}
  return [np.array([digit_of[x.tobytes()] for x in xs]) for xs in fed.client_x]


def digit_skew(config) -> float:
  """Mean over clients of the total variation between a client's digit
  histogram and the global one."""
  ds, fed = data.load_dataset(config), data.load_federated_data(config)
  hist = np.array([np.bincount(d, minlength=10)
                   for d in client_digits(fed, ds)])
  glob = np.bincount(ds.labels, minlength=10) / len(ds.labels)
  return 0.5 * np.abs(hist / hist.sum(1, keepdims=True) - glob).sum(1).mean()


@pytest.mark.parametrize('num_examples', [64, 128, 256])
def test_digits_binary_dirichlet_keys_on_the_digit(num_examples):
  for seed in range(4):
    config = binary(num_examples=num_examples, seed=seed)
    ds = data.load_dataset(config)
    fed = data.load_federated_data(config)  # raises if a client is empty
    assert len(fed.client_sizes) == 4 and min(fed.client_sizes) > 0
    per_client = client_digits(fed, ds)
    for d, y in zip(per_client, fed.client_y):
      np.testing.assert_array_equal(y[:, 0], np.where(d >= 5, 1.0, -1.0))
    # The split is the Dirichlet partition of the digits themselves (not of
    # pseudo-labels of the targets).
    parts = data.partition(ds.labels, 4, 'dirichlet', alpha=1.0,
                           shards_per_client=2,
                           rng=data.stream(seed, data.PARTITION_STREAM))
    for d, p in zip(per_client, parts):
      np.testing.assert_array_equal(d, ds.labels[p])


def test_digits_binary_dirichlet_skews_the_digits():
  # All 1438 training images, so sampling alone leaves the iid clients'
  # histograms close to the global one; Dirichlet(1) shares per digit do not.
  for seed in range(4):
    skewed = digit_skew(binary(num_examples=0, seed=seed))
    iid = digit_skew(binary(num_examples=0, seed=seed, partition='iid'))
    assert iid < 0.1 and skewed > 0.2 and skewed > 3 * iid, (skewed, iid)


def test_digits_binary_all_zero_image_raises(monkeypatch):
  real = data._load_digits

  def with_a_blank(rng):
    raw = real(rng)
    raw['x_train'][7] = 0
    return raw

  monkeypatch.setattr(data, '_load_digits', with_a_blank)
  with pytest.raises(ConfigError) as info:
    data.load_dataset(binary(num_examples=0))
  assert info.value.field == 'dataset' and 'all zeros' in str(info.value)


def test_digits_binary_config_rules():
  with pytest.raises(ConfigError) as info:
    binary(loss='xent')
  assert info.value.field == 'loss' and 'regression' in str(info.value)
  with pytest.raises(ConfigError) as info:
    binary(model='cnn')
  assert info.value.field == 'model'
  assert theory.applies(binary(model='mlp', loss='mse')) is None
  # The ten-class digits keep their ten outputs: no prediction.
  assert 'output' in theory.applies(digits())


# Keras-format cache.


def fake_arrays(rng, image_shape, n_train=40, n_test=12, label_shape=()):
  return dict(
      x_train=rng.integers(1, 256, (n_train, *image_shape), dtype=np.uint8),
      y_train=rng.integers(0, 10, (n_train, *label_shape), dtype=np.uint8),
      x_test=rng.integers(1, 256, (n_test, *image_shape), dtype=np.uint8),
      y_test=rng.integers(0, 10, (n_test, *label_shape), dtype=np.uint8))


def cached(tmp_path, **kwargs):
  values = dict(dataset='mnist', num_examples=0, num_clients=4,
                data_dir=str(tmp_path))
  values.update(kwargs)
  return ExperimentConfig(**values).validate()


def test_cache_mnist_mlp_and_cnn(tmp_path):
  raw = fake_arrays(np.random.default_rng(0), (28, 28))
  np.savez(tmp_path / 'mnist.npz', **raw)
  fed = data.load_federated_data(cached(tmp_path))
  assert fed.num_examples == 40 and fed.input_shape == (784,)
  assert fed.num_classes == 10 and fed.test_x.shape == (12, 784)
  np.testing.assert_allclose(np.linalg.norm(fed.train_x, axis=1), 1.0,
                             rtol=0, atol=1e-6)
  # Each row is the raw image direction.
  flat = raw['x_test'].reshape(12, -1).astype(np.float64)
  np.testing.assert_allclose(
      fed.test_x, flat / np.linalg.norm(flat, axis=1, keepdims=True),
      rtol=1e-6)
  np.testing.assert_array_equal(np.argmax(fed.test_y, axis=1), raw['y_test'])

  x, y, x_test, y_test = arrays(data.load_dataset(cached(tmp_path,
                                                         model='cnn')))
  assert x.shape == (40, 28, 28, 1) and x.dtype == np.float32
  np.testing.assert_array_equal(x[..., 0], raw['x_train'] / np.float32(255))
  np.testing.assert_array_equal(x_test[..., 0],
                                raw['x_test'] / np.float32(255))
  np.testing.assert_array_equal(np.argmax(y, axis=1), raw['y_train'])
  np.testing.assert_array_equal(y.sum(axis=1), 1.0)
  sub = arrays(data.load_dataset(cached(tmp_path, model='cnn',
                                        num_examples=10)))
  assert sub[0].shape == (10, 28, 28, 1) and sub[2].shape == (12, 28, 28, 1)


def test_cache_cifar10_labels_column(tmp_path):
  raw = fake_arrays(np.random.default_rng(1), (32, 32, 3), label_shape=(1,))
  np.savez(tmp_path / 'cifar10.npz', **raw)
  x, y, *_ = arrays(data.load_dataset(cached(tmp_path, dataset='cifar10',
                                              model='cnn')))
  assert x.shape == (40, 32, 32, 3) and 0 <= x.min() and x.max() <= 1
  np.testing.assert_array_equal(np.argmax(y, axis=1), raw['y_train'][:, 0])


def test_cache_data_dir_expands_user(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path))
  (tmp_path / 'cache').mkdir()
  np.savez(tmp_path / 'cache' / 'fashion_mnist.npz',
           **fake_arrays(np.random.default_rng(2), (28, 28)))
  x, *_ = arrays(data.load_dataset(cached(tmp_path, dataset='fashion_mnist',
                                           data_dir='~/cache')))
  assert x.shape == (40, 784)


def test_missing_cache_offline_raises(tmp_path, monkeypatch):
  def offline(name):
    raise OSError('URL fetch failure: no network')

  monkeypatch.setattr(data, '_download_keras', offline)
  with pytest.raises(data.DataUnavailableError) as info:
    data.load_federated_data(cached(tmp_path, dataset='fashion_mnist'))
  message = str(info.value)
  assert 'fashion_mnist' in message
  assert str(tmp_path / 'fashion_mnist.npz') in message
  assert 'x_train' in message and 'internet' in message
  assert os.listdir(tmp_path) == []


def test_missing_cache_downloads_and_writes_atomically(tmp_path, monkeypatch):
  raw = fake_arrays(np.random.default_rng(3), (28, 28))
  calls = []

  def download(name):
    calls.append(name)
    return raw

  monkeypatch.setattr(data, '_download_keras', download)
  config = cached(tmp_path / 'new', model='cnn')
  first = arrays(data.load_dataset(config))
  assert calls == ['mnist']
  assert os.listdir(tmp_path / 'new') == ['mnist.npz']  # no temp file left
  with np.load(tmp_path / 'new' / 'mnist.npz') as npz:
    for key, value in raw.items():
      np.testing.assert_array_equal(npz[key], value)
  second = arrays(data.load_dataset(config))  # cached: no second download
  assert calls == ['mnist']
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)


def test_invalid_cache_raises(tmp_path):
  raw = fake_arrays(np.random.default_rng(4), (28, 28))
  del raw['y_test']
  np.savez(tmp_path / 'mnist.npz', **raw)
  with pytest.raises(data.DataUnavailableError, match="'y_test'"):
    data.load_dataset(cached(tmp_path))
  raw = fake_arrays(np.random.default_rng(4), (32, 32))
  np.savez(tmp_path / 'mnist.npz', **raw)
  with pytest.raises(data.DataUnavailableError, match='shape'):
    data.load_dataset(cached(tmp_path))


@pytest.mark.parametrize('corrupt', ['random_bytes', 'truncated', 'npy'])
def test_unreadable_cache_raises_naming_the_file(tmp_path, corrupt):
  path = tmp_path / 'mnist.npz'
  if corrupt == 'random_bytes':
    path.write_bytes(np.random.default_rng(5).bytes(4096))
  elif corrupt == 'truncated':
    np.savez(path, **fake_arrays(np.random.default_rng(5), (28, 28)))
    path.write_bytes(path.read_bytes()[:3000])
  else:
    with open(path, 'wb') as f:
      np.save(f, np.zeros(3))
  with pytest.raises(data.DataUnavailableError) as info:
    data.load_dataset(cached(tmp_path))
  message = str(info.value)
  assert str(path) in message and 'Delete it' in message
  assert '\n' not in message
