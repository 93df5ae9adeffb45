"""Federated datasets: load, preprocess, partition across clients.

`load_federated_data(config)` returns a `FederatedData`: one (x, y) pair per
client, an optional test set, and delta, the minimum pairwise distance between
training inputs (the separation the wide-network theory depends on).

Preprocessing, by `config.model`:
  mlp: each example flattened and scaled to unit L2 norm (the theory assumes
    ||x|| = 1).
  cnn: images float32 in [0, 1], shape [H, W, C] (grayscale gets C = 1).
Labels are one-hot float32 [n, num_classes]; synthetic targets are real-valued
float32 [n, output_dim]; digits_binary's are +-1, float32 [n, 1].

Datasets:
  synthetic: n = num_examples points uniform on the unit sphere in R^d.
    target='teacher': a fixed random ReLU network (one hidden layer of width
    64, He init, no biases), outputs scaled by the empirical per-coordinate
    std of the training targets (so those have unit variance); test set of
    max(1, n // 4) more points. target='noise': i.i.d. N(0, 1), no test set.
    Draw order on the data stream: teacher weights, training x, test x (noise:
    x, then y), so a larger n extends a smaller one.
  digits: sklearn's bundled 8x8 digits (1797 examples, values 0..16), a
    seeded 20% held out as the test set.
  digits_binary: the same images and split as a binary regression task in
    the setting the NTK theory analyses (mlp only): inputs flattened to R^64,
    centred on the mean training image and scaled to unit norm, ||x_j|| = 1
    (Du et al. 2019 assume it), targets y_j = +1 for digit >= 5 and -1 for
    digit < 5, float32 [n, 1] (one output, c = 1, for the squared loss).
    Partitions key on the digit 0..9, so a Dirichlet partition is a natural
    label skew.
  mnist, fashion_mnist, cifar10: read from the cache (below).
For real data, num_examples > 0 subsamples the training set (seeded, without
replacement); 0 keeps it all. The test set is never subsampled.

Cache format: one file `<data_dir>/<name>.npz` (data_dir after expanduser)
holding four arrays, the format of keras' mnist.npz:
  x_train uint8 [N, H, W] or [N, H, W, C] (values 0..255),
  y_train integer [N] or [N, 1] (class ids 0..9), x_test, y_test likewise.
A missing file is created once by `tf.keras.datasets.<name>.load_data()`
(which downloads into ~/.keras) and written atomically. Offline without the
file, loading raises `DataUnavailableError` explaining how to get it.

Partitions (`partition`): iid, dirichlet (label skew) or shards. Synthetic
targets have no classes, so non-iid schemes use pseudo-labels: 10 quantile
bins of the first target coordinate. Each client's indices come in a seeded
random order (not sorted, not grouped by class). A client left without
examples raises `ConfigError` instead of being patched.

Randomness: every purpose has its own stream,
`np.random.default_rng(np.random.SeedSequence([config.seed, STREAM, ...]))`
(`stream`), so the same config gives bit-identical arrays, and e.g. changing
the partition does not change the data. The stream ids of the whole package
are defined here, and only here.
"""

import dataclasses
import os

from absl import logging
import numpy as np

from tff_localsgd import files
from tff_localsgd.config import ConfigError

# Stream ids: one independent random stream per purpose, for the package.
DATA_STREAM = 1  # synthetic generation, test split, subsampling
PARTITION_STREAM = 2  # client assignment
DISTANCE_STREAM = 3  # subsample for min_pairwise_distance
COHORT_STREAM = 4  # round t's cohort S_t: stream(seed, COHORT_STREAM, t)
PROBE_STREAM = 5  # the probe set of the diagnostics

TEACHER_WIDTH = 64
NUM_PSEUDO_LABELS = 10
DIGITS_TEST_FRACTION = 0.2
DIGITS_BINARY_SPLIT = 5  # digits_binary: y = +1 for digit >= 5, else -1
MAX_DISTANCE_POINTS = 20000
_BLOCK_ROWS = 512

# name -> (image shape, max raw value, number of classes).
_IMAGE_SPECS = {
    'digits': ((8, 8), 16, 10),
    'mnist': ((28, 28), 255, 10),
    'fashion_mnist': ((28, 28), 255, 10),
    'cifar10': ((32, 32, 3), 255, 10),
}
_CACHED = ('mnist', 'fashion_mnist', 'cifar10')
_CACHE_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')


class DataUnavailableError(RuntimeError):
  """A dataset is neither cached nor downloadable; the message says what to do."""


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous
class Dataset:
  """One data set, preprocessed, before partitioning.

  x_train, y_train: float32 model inputs and targets (one-hot labels or
  real-valued targets); x_test, y_test: the test set, or None without one.
  num_classes: None for regression. labels: int [n], what the partition keys
  on for each training example (the class, the digit of digits_binary, or the
  pseudo-label of a synthetic target).
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray | None
  y_test: np.ndarray | None
  num_classes: int | None
  labels: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous
class FederatedData:
  """Clients' training data, the test set, and delta.

  client_x[i]: float32 [n_i, *input_shape]; client_y[i]: float32
  [n_i, output_dim], regression targets or one-hot labels. test_x / test_y are
  None when there is no test set. num_classes is None for regression.
  min_pairwise_distance is delta (see `min_pairwise_distance`).
  """

  client_x: tuple[np.ndarray, ...]
  client_y: tuple[np.ndarray, ...]
  test_x: np.ndarray | None
  test_y: np.ndarray | None
  num_classes: int | None
  min_pairwise_distance: float

  @property
  def input_shape(self) -> tuple:
    return self.client_x[0].shape[1:]

  @property
  def output_dim(self) -> int:
    return self.client_y[0].shape[1]

  @property
  def client_sizes(self) -> tuple:
    return tuple(len(x) for x in self.client_x)

  @property
  def num_examples(self) -> int:
    return sum(self.client_sizes)

  @property
  def train_x(self) -> np.ndarray:
    """All training inputs, concatenated in client order."""
    return np.concatenate(self.client_x)

  @property
  def train_y(self) -> np.ndarray:
    return np.concatenate(self.client_y)


def probe_set(data: FederatedData, size: int, seed: int) -> np.ndarray:
  """`size` training inputs, drawn without replacement by seed: the probe set."""
  x = data.train_x
  return x[np.sort(stream(seed, PROBE_STREAM).choice(len(x), size, replace=False))]


def stream(seed: int, purpose: int, *keys: int) -> np.random.Generator:
  """The random stream for one purpose (and keys within it, e.g. a round),
  independent of the others."""
  return np.random.default_rng(np.random.SeedSequence([seed, purpose, *keys]))


def load_federated_data(config) -> FederatedData:
  """Loads config.dataset and splits it over config.num_clients clients."""
  dataset = load_dataset(config)
  x_train, y_train = dataset.x_train, dataset.y_train
  parts = partition(dataset.labels, config.num_clients, config.partition,
                    alpha=config.dirichlet_alpha,
                    shards_per_client=config.shards_per_client,
                    rng=stream(config.seed, PARTITION_STREAM))
  # delta over all training inputs; a seeded subsample if n is too large.
  delta = min_pairwise_distance(x_train,
                                rng=stream(config.seed, DISTANCE_STREAM))
  return FederatedData(
      client_x=tuple(_read_only(x_train[p]) for p in parts),
      client_y=tuple(_read_only(y_train[p]) for p in parts),
      test_x=dataset.x_test, test_y=dataset.y_test,
      num_classes=dataset.num_classes, min_pairwise_distance=delta)


def _read_only(array: np.ndarray) -> np.ndarray:
  """array, made read-only: a client's data never changes, and the
  in-process engine converts a read-only array to a tensor once."""
  array.setflags(write=False)
  return array


def load_dataset(config) -> Dataset:
  """config.dataset, preprocessed, before partitioning."""
  if config.model not in ('mlp', 'cnn'):
    raise ConfigError('model', f'{config.model!r} is not one of mlp, cnn')
  rng = stream(config.seed, DATA_STREAM)
  if config.dataset == 'synthetic':
    if config.model != 'mlp':
      raise ConfigError('model', 'cnn needs image data, not synthetic')
    x_train, y_train, x_test, y_test = synthetic_data(
        config.num_examples, config.input_dim, config.output_dim,
        config.target, rng)
    return Dataset(x_train, y_train, x_test, y_test, None,
                   pseudo_labels(y_train))
  if config.dataset in ('digits', 'digits_binary'):
    raw = _load_digits(rng)
  elif config.dataset in _CACHED:
    raw = load_cached_arrays(config.dataset,
                             os.path.expanduser(config.data_dir))
  else:
    raise ConfigError('dataset', f'{config.dataset!r} is not one of '
                      f'synthetic, digits, digits_binary, {", ".join(_CACHED)}')
  # Subsample after the test split so the test set does not depend on it.
  keep = _subsample(len(raw['x_train']), config.num_examples,
                    config.dataset, rng)
  if config.dataset == 'digits_binary':
    return digits_binary(raw, keep)
  _, max_value, num_classes = _IMAGE_SPECS[config.dataset]
  y_train = one_hot(raw['y_train'][keep], num_classes)
  return Dataset(preprocess_images(raw['x_train'][keep], max_value,
                                   config.model),
                 y_train,
                 preprocess_images(raw['x_test'], max_value, config.model),
                 one_hot(raw['y_test'], num_classes),
                 num_classes, np.argmax(y_train, axis=1))


def digits_binary(raw: dict, keep: np.ndarray) -> Dataset:
  """The digits as a +-1 regression task in the NTK theory's setting.

  raw: _load_digits' split (images 8x8, values 0..16, and digits 0..9);
  keep: the training subsample. With v_j = vec(image_j) in R^64 and mu the
  mean of the split's training images (all of them, so that the test inputs
  do not depend on num_examples),

      x_j = (v_j - mu) / ||v_j - mu||,   so ||x_j|| = 1 as the theory assumes
      (Du et al. 2019);   y_j = +1 if digit_j >= 5 else -1, float32 [n, 1].

  Why centre: raw images are non-negative, all in one orthant, so H has a
  dominant near-constant mode and a small lambda_min; the weights then
  travel far, H drifts, and the linearized prediction misses the measured
  rounds to eps by ~1.6-1.9x at m = 1024. The partition keys on the digit.
  Raises ConfigError if an image equals mu (it has no direction).
  """
  size = int(np.prod(_IMAGE_SPECS['digits'][0]))  # 64
  train = np.asarray(raw['x_train'], np.float64).reshape(-1, size)
  mean = train.mean(axis=0)
  try:
    x = unit_rows(train[keep] - mean)
    x_test = unit_rows(
        np.asarray(raw['x_test'], np.float64).reshape(-1, size) - mean)
  except ValueError as err:
    raise ConfigError('dataset', f'digits_binary needs unit-norm inputs: '
                      f'{err}') from None
  digits = np.asarray(raw['y_train'][keep]).reshape(-1).astype(np.int64)
  return Dataset(x, binary_targets(digits), x_test,
                 binary_targets(raw['y_test']), None, digits)


def binary_targets(digits) -> np.ndarray:
  """y = +1 for digit >= DIGITS_BINARY_SPLIT, -1 below: float32 [n, 1]."""
  digits = np.asarray(digits).reshape(-1, 1)
  return np.where(digits >= DIGITS_BINARY_SPLIT, 1.0, -1.0).astype(np.float32)


def synthetic_data(n: int, d: int, c: int, target: str,
                   rng: np.random.Generator):
  """Unit-sphere inputs in R^d with teacher or noise targets.

  Returns float32 (x_train [n, d], y_train [n, c], x_test, y_test); the test
  arrays are None for target='noise'.
  """
  if n <= 0:
    raise ConfigError('num_examples', 'synthetic data needs num_examples > 0')
  if target == 'teacher':
    # He init: keeps the hidden activations O(1) whatever d is.
    w1 = rng.normal(0.0, np.sqrt(2.0 / d), size=(d, TEACHER_WIDTH))
    w2 = rng.normal(0.0, np.sqrt(2.0 / TEACHER_WIDTH), size=(TEACHER_WIDTH, c))
    x_train = unit_sphere(n, d, rng)
    x_test = unit_sphere(max(1, n // 4), d, rng)
    teacher = lambda x: np.maximum(x @ w1, 0.0) @ w2
    out_train = teacher(x_train.astype(np.float64))
    scale = out_train.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # n = 1 has no spread
    y_train = (out_train / scale).astype(np.float32)
    y_test = (teacher(x_test.astype(np.float64)) / scale).astype(np.float32)
    return x_train, y_train, x_test, y_test
  if target == 'noise':
    x_train = unit_sphere(n, d, rng)
    y_train = rng.standard_normal((n, c)).astype(np.float32)
    return x_train, y_train, None, None
  raise ConfigError('target', f'{target!r} is not one of teacher, noise')


def unit_sphere(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
  """n points uniform on the unit sphere: normalized Gaussian draws."""
  return unit_rows(rng.standard_normal((n, d)))


def unit_rows(x: np.ndarray) -> np.ndarray:
  """Rows of x scaled to unit L2 norm, float32 (computed in float64)."""
  x = np.asarray(x, dtype=np.float64)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  zero = np.flatnonzero(norms[:, 0] == 0)
  if zero.size:
    raise ValueError(f'example {zero[0]} is all zeros ({zero.size} such); '
                     'it cannot be scaled to unit norm')
  return (x / norms).astype(np.float32)


def preprocess_images(raw: np.ndarray, max_value: float,
                      model: str) -> np.ndarray:
  """Raw images [N, H, W(, C)] -> float32 model inputs.

  cnn: [N, H, W, C] in [0, 1]; mlp: [N, H*W*C] with unit-norm rows.
  """
  x = np.asarray(raw).astype(np.float32) / np.float32(max_value)
  if model == 'mlp':
    return unit_rows(x.reshape(len(x), -1))
  if x.ndim == 3:
    x = x[..., np.newaxis]  # grayscale: one channel
  return x


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Integer labels [N] or [N, 1] -> float32 one-hot [N, num_classes]."""
  labels = np.asarray(labels).reshape(-1).astype(np.int64)
  return np.eye(num_classes, dtype=np.float32)[labels]


def pseudo_labels(targets: np.ndarray) -> np.ndarray:
  """Class ids 0..9 for regression targets: deciles of the first coordinate.

  Lets the non-iid partitions skew clients by target value as they skew by
  class on labelled data.
  """
  first = np.asarray(targets)[:, 0]
  edges = np.quantile(first, np.linspace(0, 1, NUM_PSEUDO_LABELS + 1)[1:-1])
  return np.searchsorted(edges, first, side='right')


def partition(labels: np.ndarray, num_clients: int, scheme: str, *,
              alpha: float, shards_per_client: int,
              rng: np.random.Generator) -> list:
  """Splits range(len(labels)) over clients; returns one index array each.

  iid: a seeded permutation cut into num_clients parts (sizes differ by at
    most 1).
  dirichlet: label skew; each class is split over the clients with
    proportions ~ Dirichlet(alpha * ones(num_clients)).
  shards: indices sorted by label (ties in a seeded order) are cut into
    num_clients * shards_per_client contiguous shards, and each client gets
    shards_per_client of them at random.
  Every index goes to exactly one client; each client's indices are in a
  seeded random order. Raises ConfigError if a client would get no examples.
  """
  labels = np.asarray(labels).reshape(-1)
  n = len(labels)
  if scheme == 'iid':
    parts = np.array_split(rng.permutation(n), num_clients)
    _check_nonempty(parts, 'num_clients', f'{n} examples cannot fill '
                    f'{num_clients} clients')
    return parts
  if scheme == 'dirichlet':
    buckets = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
      members = rng.permutation(np.flatnonzero(labels == label))
      shares = rng.dirichlet(np.full(num_clients, float(alpha)))
      cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
      for bucket, piece in zip(buckets, np.split(members, cuts)):
        bucket.append(piece)
    parts = [rng.permutation(np.concatenate(b)) for b in buckets]
    _check_nonempty(parts, 'dirichlet_alpha', f'the Dirichlet split with '
                    f'alpha={alpha} of {n} examples over {num_clients} clients'
                    ' left a client empty; raise dirichlet_alpha or '
                    'num_examples, or lower num_clients')
    return parts
  if scheme == 'shards':
    num_shards = num_clients * shards_per_client
    shuffled = rng.permutation(n)  # random tie order within a label
    by_label = shuffled[np.argsort(labels[shuffled], kind='stable')]
    shards = np.array_split(by_label, num_shards)
    owners = rng.permutation(num_shards).reshape(num_clients,
                                                 shards_per_client)
    parts = [rng.permutation(np.concatenate([shards[s] for s in row]))
             for row in owners]
    _check_nonempty(parts, 'num_clients', f'{n} examples in {num_shards} '
                    f'shards ({shards_per_client} per client) cannot fill '
                    f'{num_clients} clients')
    return parts
  raise ConfigError('partition', f'{scheme!r} is not one of iid, dirichlet, '
                    'shards')


def _check_nonempty(parts, field: str, why: str):
  empty = [i for i, p in enumerate(parts) if len(p) == 0]
  if empty:
    raise ConfigError(field, f'client {empty[0]} received no examples '
                      f'({len(empty)} empty clients): {why}')


def min_pairwise_distance(x: np.ndarray, *,
                          max_points: int = MAX_DISTANCE_POINTS,
                          rng: np.random.Generator | None = None) -> float:
  """delta = min over i < j of ||x_i - x_j||, rows of x flattened.

  Exact when n <= max_points. Beyond that it is the minimum over a seeded
  subsample of max_points rows (an upper bound on the true delta): the exact
  value is O(n^2 d), too slow for n ~ 60000. Duplicate rows give 0; n < 2
  gives inf (no pairs).

  Blocks of rows are screened with ||a||^2 + ||b||^2 - 2 a.b (clipped at 0)
  in float64; the pairs within that form's rounding error bound of a block's
  minimum are then recomputed directly as ||a - b||, so cancellation cannot
  change the result.
  """
  x = np.asarray(x).reshape(len(x), -1)
  n = len(x)
  if n > max_points:
    if rng is None:
      raise ValueError(f'{n} > max_points={max_points} rows: pass rng to '
                       'choose the subsample')
    logging.info('min_pairwise_distance: %d of %d points (seeded subsample)',
                 max_points, n)
    x = x[np.sort(rng.choice(n, size=max_points, replace=False))]
    n = max_points
  if n < 2:
    return float('inf')
  x = x.astype(np.float64)
  sq = np.einsum('ij,ij->i', x, x)
  # Rounding bound of the expanded form, a few multiples of d * eps * ||.||^2.
  tol = 4.0 * (x.shape[1] + 4) * np.finfo(np.float64).eps * 2.0 * sq.max()
  best = np.inf  # squared
  for start in range(0, n - 1, _BLOCK_ROWS):
    stop = min(start + _BLOCK_ROWS, n)
    rows, cols = x[start:stop], x[start:]
    d2 = sq[start:stop, None] + sq[None, start:] - 2.0 * (rows @ cols.T)
    np.maximum(d2, 0.0, out=d2)
    # Only pairs i < j: mask the diagonal and the lower triangle in the block.
    d2[np.tril_indices(stop - start, k=0, m=d2.shape[1])] = np.inf
    block_min = d2.min()
    if block_min - tol > best:
      continue
    # Only pairs that could hold the block's true minimum and beat `best`.
    r, c = np.nonzero(d2 <= min(block_min + 2.0 * tol, best + tol))
    chunk = max(1, 2**22 // x.shape[1])  # bounds memory if many pairs tie
    for i in range(0, len(r), chunk):
      diff = rows[r[i:i + chunk]] - cols[c[i:i + chunk]]
      best = min(best, float(np.einsum('ij,ij->i', diff, diff).min()))
      if best == 0.0:
        return 0.0  # duplicates: nothing is smaller
  return float(np.sqrt(best))


def _load_digits(rng: np.random.Generator) -> dict:
  """sklearn's bundled digits (no download) with a seeded 20% test split."""
  from sklearn.datasets import load_digits  # slow import; only needed here
  images, labels = load_digits(return_X_y=True)
  images = images.reshape(-1, 8, 8)
  order = rng.permutation(len(images))
  num_test = int(round(DIGITS_TEST_FRACTION * len(images)))
  test, train = order[:num_test], order[num_test:]
  return dict(x_train=images[train], y_train=labels[train],
              x_test=images[test], y_test=labels[test])


def _subsample(n: int, num_examples: int, dataset: str,
               rng: np.random.Generator) -> np.ndarray:
  """Indices of a seeded subsample of size num_examples (0: all, in order)."""
  if num_examples == 0:
    return np.arange(n)
  if num_examples > n:
    raise ConfigError('num_examples', f'{num_examples} > the {n} training '
                      f'examples of {dataset}')
  return rng.choice(n, size=num_examples, replace=False)


def cache_path(name: str, data_dir: str) -> str:
  return os.path.join(os.path.expanduser(data_dir), f'{name}.npz')


def load_cached_arrays(name: str, data_dir: str) -> dict:
  """The four arrays of `<data_dir>/<name>.npz`, creating it if missing."""
  path = cache_path(name, data_dir)
  if os.path.exists(path):
    arrays = _read_cache(name, path)
    _check_arrays(name, path, arrays)
    return arrays
  try:
    arrays = _download_keras(name)
  except Exception as err:  # keras raises a bare Exception on fetch failure
    raise DataUnavailableError(_unavailable_message(name, path, err)) from err
  _check_arrays(name, path, arrays)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.atomic_write(path, lambda f: np.savez(f, **arrays))
    logging.info('cached %s', path)
  except OSError as err:  # a read-only cache still leaves usable data
    logging.warning('could not write the %s cache %s: %s', name, path, err)
  return arrays


def _read_cache(name: str, path: str) -> dict:
  """The cache file's arrays; DataUnavailableError if it is no readable npz."""
  try:
    npz = np.load(path, allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):
      raise ValueError('it holds one .npy array, not an .npz archive')
    with npz:
      return {k: npz[k] for k in _CACHE_KEYS if k in npz}
  except Exception as err:  # pickle, zip, zlib and I/O errors alike
    raise DataUnavailableError(
        f'{name}: {path} is not a readable .npz file ({type(err).__name__}: '
        f'{err}). {_REMEDY} {_FORMAT}.') from err


def _download_keras(name: str) -> dict:
  """Fetches `name` with tf.keras.datasets (downloads into ~/.keras)."""
  import tensorflow as tf  # heavy; only when the cache is missing
  (x_train, y_train), (x_test, y_test) = getattr(
      tf.keras.datasets, name).load_data()
  return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _check_arrays(name: str, path: str, arrays: dict):
  """Rejects a cache whose keys, shapes or labels do not fit `name`."""
  shape, _, num_classes = _IMAGE_SPECS[name]
  problems = [f'missing array {k!r}' for k in _CACHE_KEYS if k not in arrays]
  for split in ('train', 'test'):
    if problems:
      break
    x, y = arrays[f'x_{split}'], np.asarray(arrays[f'y_{split}']).reshape(-1)
    if x.shape[1:] != shape:
      problems.append(f'x_{split} has images of shape {x.shape[1:]}, '
                      f'expected {shape}')
    if len(y) != len(x):
      problems.append(f'y_{split} has {len(y)} labels for {len(x)} images')
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0
                   or y.max() >= num_classes):
      problems.append(f'y_{split} must hold integer class ids '
                      f'0..{num_classes - 1}')
  if problems:
    raise DataUnavailableError(
        f'{name}: {path} is not a valid cache file ({"; ".join(problems)}). '
        f'{_FORMAT}. {_REMEDY}')


_FORMAT = ('The cache is one NumPy .npz file with arrays x_train (uint8 '
           '[N, H, W] or [N, H, W, C]), y_train (integer class ids [N]), '
           'x_test, y_test: the format of keras\' mnist.npz')


_REMEDY = ('Delete it, so that it is downloaded again, or replace it with '
           'a valid copy.')


def _unavailable_message(name: str, path: str, err: Exception) -> str:
  return (
      f'{name} is not cached at {path} and downloading it failed '
      f'({type(err).__name__}: {err}). {_FORMAT}. To get it, run once on a '
      f'machine with internet access (loading calls '
      f'tf.keras.datasets.{name}.load_data() and writes {path}), or copy '
      'such a file there, e.g. made with: python -c "import numpy as np, '
      f'tensorflow as tf; (a, b), (c, d) = tf.keras.datasets.{name}'
      f'.load_data(); np.savez(\'{name}.npz\', x_train=a, y_train=b, '
      'x_test=c, y_test=d)"')
