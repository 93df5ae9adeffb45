"""The table of every metric a run writes: tag, formula, meaning, CSV column.

It is the one place where a metric's tag becomes a CSV column and back, the
source of each TensorBoard scalar's description, and of the metrics table in
docs/metrics.md (`markdown_table()`; a test keeps the two equal).

    metrics.column('lazy/weight_change_rel/hidden_1')
        == 'lazy_weight_change_rel_hidden_1'
    metrics.tag('lazy_weight_change_rel_hidden_1')
        == 'lazy/weight_change_rel/hidden_1'

A metric of metrics.csv has the column tag.replace('/', '_'); one of
drift_steps.csv (drift_per_step/<q>) the column <q>; histograms and the
sweep's final/* scalars are in the event files only and have no column.
Per-layer metrics are one row each, with the placeholder LAYER for the layer
name (input, hidden_1, ..., output; conv_1, conv_2 in the cnn): the inverse
of a column comes from the table, so layer names may contain '_'.

Notation (Deng, Kamani and Mahdavi 2022): w^t the averaged model after round
t, w⁰ the initialization, W_l the weights of layer l; client i holds D_i,
n_i = |D_i| of the n training examples, F_i(w) = (1/n_i) Σ_{j∈D_i}
ℓ(f(w; x_j), y_j), F = Σ_i p_i F_i; the cohort S_t, p_i = n_i/Σ_{j∈S_t} n_j;
K local steps of size η from w_i^{t,0} = w^t to w_i^{t,K}, their virtual
average w̄^{t,k} = Σ_{i∈S_t} p_i w_i^{t,k}; server step η_s; width m.
"""

import dataclasses
import re

LAYER = '<layer>'
METRICS_CSV = 'metrics.csv'
STEPS_CSV = 'drift_steps.csv'
STEP_PREFIX = 'drift_per_step/'  # the tags of drift_steps.csv's rows


@dataclasses.dataclass(frozen=True)
class Metric:
  """One row of the table.

  tag: the TensorBoard tag; LAYER in it stands for a layer's name.
  formula: its definition, in the notation of the module doc.
  meaning: what it says, in one sentence.
  file: the CSV file holding it, or None (event files only).
  column: its column in `file`, or None.
  histogram: a TensorBoard histogram, not a scalar.
  """
  tag: str
  formula: str
  meaning: str
  file: str | None = METRICS_CSV
  column: str | None = None
  histogram: bool = False

  def __post_init__(self):
    if self.file == METRICS_CSV and self.column is None:
      object.__setattr__(self, 'column', self.tag.replace('/', '_'))

  @property
  def description(self) -> str:
    """The TensorBoard description (Markdown): formula, then meaning."""
    return f'{self.formula}\n\n{self.meaning}'


# The lockstep round's drift at local step k = 0..K−1: (name, q_k, meaning).
_STEP_DRIFT = (
    ('grad_diff',
     'Σ_{i∈S_t} p_i ‖∇F_i(w_i^{t,k}) − ∇F_i(w̄^{t,k})‖',
     'how far the local gradients are from the gradients at the average: '
     'the paper\'s key quantity'),
    ('grad_diff_rel',
     'Σ_{i∈S_t} p_i ‖∇F_i(w_i^{t,k}) − ∇F_i(w̄^{t,k})‖ / '
     '‖Σ_{i∈S_t} p_i ∇F_i(w̄^{t,k})‖ (0/0 = 0)',
     'grad_diff relative to the cohort\'s gradient at the average'),
    ('smooth_eff',
     'η Σ_{i∈S_t} p_i ‖∇F_i(w_i^{t,k}) − ∇F_i(w̄^{t,k})‖ / '
     'Σ_{i∈S_t} p_i ‖w_i^{t,k} − w̄^{t,k}‖ (0/0 = 0)',
     'a dimensionless effective smoothness along the trajectory: bounded '
     'means the local gradients behave as if F_i were smooth'),
    ('nonsmooth_frac',
     'Σ_{i∈S_t} p_i ‖∇F_i(w_i^{t,k}) − ∇F_i(w̄^{t,k}) − '
     '∇²F_i(w̄^{t,k})(w_i^{t,k} − w̄^{t,k})‖ / '
     'Σ_{i∈S_t} p_i ‖∇F_i(w_i^{t,k}) − ∇F_i(w̄^{t,k})‖ (0/0 = 0)',
     'the part of the gradient difference that the Hessian at the average '
     'does not predict: the effect of flipped ReLU activations'),
)


def _drift_rows():
  """drift/<q> (mean over k), drift/<q>_max and drift_per_step/<q>."""
  rows = []
  for name, q, meaning in _STEP_DRIFT:
    rows += [
        Metric(f'drift/{name}', f'mean over k < K of {q}',
               f'{meaning}; the mean over the local steps of the lockstep '
               'round'),
        Metric(f'drift/{name}_max', f'max over k < K of {q}',
               f'{meaning}; the largest over the local steps'),
        Metric(f'{STEP_PREFIX}{name}', f'{q} (TensorBoard step (t−1)K + k)',
               f'{meaning}; at each local step k (--diag_per_step)',
               file=STEPS_CSV, column=name),
    ]
  return rows


_GRAM = ('Ĥ_t[j,j\'] = ⟨∂f(w^t; x_j)/∂w, ∂f(w^t; x_j\')/∂w⟩ over the '
         'trainable weights, x_j in the probe set, f the sum of the outputs')
_H0 = ('H₀ = J₀J₀ᵀ, J₀ = ∂f(w⁰; x_j)/∂w over the trainable weights, '
       'j = 1..n')
_FLIPS = ('Σ_{j, r} 1[(z_l(w^t; x_j)_r > 0) ≠ (z_l(w⁰; x_j)_r > 0)] / #pairs, '
          'x_j in the probe set, r the units, z_l the pre-activations')

METRICS = (
    # The objective and the round (metrics.csv).
    Metric('train/loss',
           'F(w^t) = Σ_i p_i F_i(w^t) over all clients, p_i = n_i/n',
           'the training objective at the averaged model: the mean loss over '
           'the union of the clients\' data (ℓ = ½‖f − y‖² for mse, softmax '
           'cross-entropy for xent)'),
    Metric('train/accuracy', '(1/n) Σ_j 1[argmax f(w^t; x_j) = y_j]',
           'the fraction of training examples classified correctly (class '
           'labels only)'),
    Metric('test/loss', '(1/n_test) Σ_{j∈test} ℓ(f(w^t; x_j), y_j)',
           'the mean loss on the held-out test set'),
    Metric('test/accuracy', '(1/n_test) Σ_{j∈test} 1[argmax f(w^t; x_j) = y_j]',
           'the fraction of test examples classified correctly (class labels '
           'only)'),
    Metric('train/local_loss',
           'Σ_{i∈S_t} p_i F_i(w_i^{t,K−1}; ξ_i^{t,K−1})',
           'the cohort\'s loss on its last local minibatch ξ, from the round '
           'itself: cheap and noisy (not on lockstep rounds)'),
    Metric('train/grad_norm',
           '‖∇F(w^t)‖ = ‖Σ_i p_i ∇F_i(w^t)‖ over all clients',
           'the norm of the full gradient over the trainable weights at the '
           'averaged model (diagnostic rounds)'),
    Metric('system/round_time_s', 'seconds',
           'wall time of the round\'s TFF computation (the lockstep round on a '
           'diagnostic round); when the round evaluates F(w^{t-1}) for '
           'train/loss (every client in it, unpacked, --eval_every=1), that '
           'too'),
    Metric('system/examples_per_s',
           'Σ_{i∈S_t} K·B / round_time_s (Σ_{i∈S_t} K·n_i for local_gd)',
           'example gradients the round computed per second'),
    Metric('system/diag_time_s', 'seconds',
           'wall time of the averaged model\'s diagnostics: lazy, ntk, '
           'train/grad_norm and per_client/train_loss'),
    # Client drift, from the lockstep round (--diag_every, --lockstep_drift).
    *_drift_rows(),
    Metric('drift/model_divergence',
           'Σ_{i∈S_t} p_i ‖w_i^{t,K} − w̄^{t,K}‖',
           'how far the local models spread around their average at the end '
           'of the local steps'),
    Metric('drift/grad_diff_vs_start',
           'Σ_{i∈S_t} p_i ‖∇F_i(w_i^{t,K}) − ∇F_i(w^t)‖',
           'the cheap drift against the round\'s broadcast model, computed in '
           'the client update (also with --lockstep_drift=false)'),
    # Lazy training: the averaged model against w⁰ (--diag_every).
    Metric('lazy/weight_change_rel',
           '‖w^t − w⁰‖ / ‖w⁰‖ over all trainable weights',
           'how far training moved the weights from the initialization: small '
           'in the lazy regime'),
    Metric(f'lazy/weight_change_rel/{LAYER}', '‖W_l^t − W_l⁰‖_F / ‖W_l⁰‖_F',
           'the same for one trainable layer l'),
    Metric(f'lazy/weight_change_spectral_rel/{LAYER}',
           '‖W_l^t − W_l⁰‖₂ / ‖W_l⁰‖₂ (power iteration)',
           'the same in the spectral norm, for each trainable hidden m×m ReLU '
           'layer l'),
    Metric('lazy/activation_flip_frac', _FLIPS + ', over all ReLU layers l',
           'the fraction of (probe example, ReLU unit) pairs whose activation '
           'pattern differs from the one at w⁰'),
    Metric(f'lazy/activation_flip_frac/{LAYER}', _FLIPS + ', for one layer l',
           'the same for one ReLU layer l'),
    Metric('ntk/lambda_min', 'λ_min(Ĥ_t), ' + _GRAM,
           'the smallest eigenvalue of the empirical NTK Gram matrix on the '
           'probe set (--ntk_every)'),
    Metric('ntk/lambda_max', 'λ_max(Ĥ_t), ' + _GRAM,
           'the largest eigenvalue of the empirical NTK Gram matrix on the '
           'probe set (--ntk_every)'),
    Metric('ntk/rel_change', '‖Ĥ_t − Ĥ_0‖_F / ‖Ĥ_0‖_F, ' + _GRAM,
           'how far the NTK has moved from the one at initialization'),
    # The linearized (NTK) prediction from w⁰ (tff_localsgd/theory.py).
    Metric('theory/loss',
           'L_t = (1/2n) ‖Mᵗ r₀‖², r₀ = f(w⁰; X) − Y, M = (1 − η_s) I + '
           'η_s Σ_{i∈S} p_i A_iᴷ, A_i = I − (η/n_i) H₀[:, D_i] E_{D_i}ᵀ',
           'the loss the linearized dynamics of Local GD predict for round t '
           '(with sampled cohorts, M_t of round t\'s cohort)'),
    Metric('theory/lambda_min', 'λ_min(H₀), ' + _H0,
           'the smallest eigenvalue of the NTK Gram matrix at initialization '
           'over the n training points (2048 evenly spaced ones if n is '
           'larger), which sets the rate'),
    Metric('theory/lambda_max', 'λ_max(H₀), ' + _H0,
           'the largest eigenvalue of the NTK Gram matrix at initialization '
           'over the n training points (2048 evenly spaced ones if n is '
           'larger)'),
    Metric('theory/rate_per_round', 'ρ(M)², ρ the spectral radius',
           'the predicted asymptotic L_{t+1}/L_t (with sampled cohorts, of '
           'the mean map)'),
    Metric('theory/rounds_to_eps',
           'T_pred = t⁻ + (t⁺ − t⁻) log(L_{t⁻}/ε F₀) / log(L_{t⁻}/L_{t⁺}), '
           't⁺ the first round with L_t ≤ ε F₀, t⁻ = t⁺ − 1',
           'the round at which the predicted curve crosses the target '
           '(--eps), log-linear between the rounds around it; the curve runs '
           'to its crossing whatever the budget (up to 20000 rounds, then '
           'extrapolated at ρ(M)²)'),
    Metric('theory/delta', 'δ = min_{j≠j\'} ‖x_j − x_j\'‖',
           'the data separation: the smallest distance between two training '
           'inputs'),
    Metric('theory/zero_predictor_loss',
           'F₀ = (1/n) Σ_j ℓ(0, y_j) = (1/2n) Σ_j ‖y_j‖²',
           'the loss of the zero predictor f ≡ 0: the scale of the data that '
           'the target ε F₀ is set against'),
    # Histograms over clients (event files only).
    Metric('per_client/train_loss', '{F_i(w^t)}, i = 1..N',
           'each client\'s objective at the averaged model', file=None,
           histogram=True),
    Metric('per_client/drift/grad_diff',
           '{‖∇F_i(w_i^{t,K−1}) − ∇F_i(w̄^{t,K−1})‖}, i ∈ S_t',
           'each client\'s gradient difference at the last local step',
           file=None, histogram=True),
    Metric('per_client/drift/nonsmooth',
           '{‖∇F_i(w_i^{t,K−1}) − ∇F_i(w̄^{t,K−1}) − '
           '∇²F_i(w̄^{t,K−1})(w_i^{t,K−1} − w̄^{t,K−1})‖}, i ∈ S_t',
           'each client\'s gradient difference that the Hessian misses, at '
           'the last local step', file=None, histogram=True),
    Metric('per_client/drift/model_divergence',
           '{‖w_i^{t,K} − w̄^{t,K}‖}, i ∈ S_t',
           'each client\'s distance from the average at the end of the round',
           file=None, histogram=True),
    Metric('per_client/drift/grad_diff_vs_start',
           '{‖∇F_i(w_i^{t,K}) − ∇F_i(w^t)‖}, i ∈ S_t',
           'each client\'s gradient change over the round', file=None,
           histogram=True),
    # A sweep's trial results (tff_localsgd/sweep/hparams.py: HParams metrics).
    Metric('final/train/loss', 'F(w^T), T the last round',
           'train/loss at the end of the trial', file=None),
    Metric('final/rounds_to_eps',
           'T = t⁻ + (t⁺ − t⁻) log(F(w^{t⁻})/ε F₀) / log(F(w^{t⁻})/F(w^{t⁺})), '
           't⁺ the first evaluated round with F(w^t) ≤ ε F₀, t⁻ the one '
           'before; F₀ = (1/n) Σ_j ℓ(0, y_j)',
           'the round at which train/loss crosses ε (--eps) times the zero '
           'predictor\'s loss, log-linear between the rounds around it; '
           'absent if the trial never gets there', file=None),
    Metric('final/drift/grad_diff_rel', 'drift/grad_diff_rel, last measured',
           'the trial\'s last measured relative gradient difference',
           file=None),
    Metric('final/lazy/weight_change_rel',
           'lazy/weight_change_rel, last measured',
           'the trial\'s last measured relative weight change', file=None),
    Metric('final/lazy/activation_flip_frac',
           'lazy/activation_flip_frac, last measured',
           'the trial\'s last measured fraction of flipped activations',
           file=None),
)


def _instance(template: str, name: str):
  """The layer whose instance of template is name, '' for template itself,
  or None if name is neither."""
  if LAYER not in template:
    return '' if name == template else None
  before, after = template.split(LAYER)
  match = re.fullmatch(re.escape(before) + r'(\w+)' + re.escape(after), name)
  return match[1] if match else None


def _find(field: str, name: str):
  """(row, layer) of the row whose `field` (tag or column) matches name,
  or (None, None)."""
  for row in METRICS:
    template = getattr(row, field)
    if template is not None:
      layer = _instance(template, name)
      if layer is not None:
        return row, layer
  return None, None


def _lookup(field: str, name: str):
  """_find, raising KeyError for a name the table lacks."""
  row, layer = _find(field, name)
  if row is None:
    raise KeyError(f'{name!r} is not a {field} of tff_localsgd.metrics')
  return row, layer


def find(tag: str) -> Metric | None:
  """The row of tag (the LAYER row for a per-layer tag), or None."""
  return _find('tag', tag)[0]


def column(tag: str) -> str:
  """The CSV column of a tag: train/loss -> train_loss.

  Raises KeyError for a tag not in the table or in no CSV file.
  """
  row, layer = _lookup('tag', tag)
  if row.column is None:
    raise KeyError(f'{tag!r} is in no CSV file (event files only)')
  return row.column.replace(LAYER, layer)


def tag(column: str) -> str:
  """The tag of a CSV column, column()'s inverse: raises KeyError if unknown."""
  row, layer = _lookup('column', column)
  return row.tag.replace(LAYER, layer)


def description(tag: str) -> str:
  """The formula and meaning of a tag (Markdown): raises KeyError if unknown."""
  return _lookup('tag', tag)[0].description


def _column_cell(row: Metric) -> str:
  if row.file is None:
    return '—'
  if row.file == METRICS_CSV:
    return f'`{row.column}`'
  return f'`{row.column}` in `{row.file}`'


def markdown_table() -> str:
  """The table in docs/metrics.md: tag, CSV column, formula, meaning."""
  lines = ['| tag | CSV column | formula | meaning |', '|---|---|---|---|']
  for row in METRICS:
    kind = ' (histogram)' if row.histogram else ''
    lines.append(f'| `{row.tag}`{kind} | {_column_cell(row)} | {row.formula} '
                 f'| {row.meaning} |')
  return '\n'.join(lines) + '\n'
