"""The widths the theory proves sufficient, as data with citations, and the
table that puts the measured exponent b of m*(n) beside them.

A proved width is a worst-case sufficient condition: for every dataset that
meets the paper's conditions, a width above it guarantees (with high
probability) that training converges at a linear rate. Its exponent of n
holds the other quantities fixed (lambda_0, the least eigenvalue of the
limiting Gram matrix, and the separation delta), although lambda_0 itself
can shrink as n grows. The kit's m*(n) is a different quantity, an
empirical threshold of the prediction's accuracy on the kit's data: the
smallest width at which the linearized prediction gives the rounds to eps
within a stated error. Neither bounds the other.

`provenance` says where each number comes from: "abstract" (the paper's
own abstract says it), "title", or "lineage" (a later paper's account of
it, named); a number not checked is not given.
"""

import dataclasses
import math

SUBQUADRATIC = ('Table 1 of "Subquadratic Overparameterization for Shallow '
                'Neural Networks"')


@dataclasses.dataclass(frozen=True)
class TheoryWidth:
  """One proved sufficient width. exponent: of n (None: not stated)."""
  source: str
  exponent: float | None
  bound: str
  quantity: str
  conditions: str
  provenance: str


GD_TO_ZERO = ('hidden width for which gradient descent from a random '
              'initialization drives the squared training loss to zero at a '
              'linear rate, with probability >= 1 - delta')

THEORY_WIDTHS = (
    TheoryWidth(
        source='Du, Zhai, Poczos, Singh 2019 (ICLR; arXiv 1810.02054)',
        exponent=6, bound='m = Omega(n^6 / (lambda_0^4 delta^3))',
        quantity=GD_TO_ZERO + '; step eta = O(lambda_0 / n^2)',
        conditions='two-layer ReLU, hidden layer trained, no two inputs '
        'parallel (lambda_0 > 0), full-batch GD',
        provenance='lineage: the abstract says only "as long as m is large '
        'enough"; the bound is the paper\'s theorem for gradient descent as '
        f'quoted by later work (Omega(n^6) in {SUBQUADRATIC})'),
    TheoryWidth(
        source='Song and Yang 2019, "Quadratic suffices for '
        'over-parametrization via matrix Chernoff bound" (arXiv 1906.03593)',
        exponent=2, bound='m = Omega~(n^2) (other factors not checked)',
        quantity=GD_TO_ZERO,
        conditions='two-layer ReLU, the setting of Du et al. 2019',
        provenance='title ("quadratic suffices") and lineage (Omega~(n^2) in '
        f'{SUBQUADRATIC}); the abstract says only that it improves the '
        'widths of Li and Liang 2018, Du et al. 2019 and Arora et al. 2019'),
    TheoryWidth(
        source='Oymak and Soltanolkotabi 2020 (IEEE JSAIT 1(1):84-105; '
        'arXiv 1902.04674)',
        exponent=2, bound='sqrt(m d) >~ n, i.e. m >~ n^2 / d',
        quantity='number of parameters m d (input dimension d) for which '
        '(stochastic) gradient descent from a random initialization '
        'converges at a geometric rate to a global optimum',
        conditions='one hidden layer, smooth activations (the ReLU case in '
        'the paper has its own bound, not checked); only the hidden layer '
        'trained (lineage)',
        provenance='abstract: "as soon as the square-root of the number of '
        'network parameters exceeds the size of the training data"'),
    TheoryWidth(
        source='Allen-Zhu, Li, Song 2019 (ICML; arXiv 1811.03962)',
        exponent=24, bound='m = Omega(n^24 L^12 ...)',
        quantity='width of every hidden layer for which SGD finds a global '
        'minimum of the training loss in polynomial time (linear rate for '
        'the regression loss)',
        conditions='deep (L layers) ReLU networks, also CNN and ResNet; '
        'non-degenerate inputs (separation delta)',
        provenance='abstract: "polynomial in L ... and in n", no degree; '
        'the degree is the lineage\'s: Zou and Gu 2019\'s abstract ("a '
        f'high-degree polynomial ... e.g., O(n^24)") and {SUBQUADRATIC} '
        '(Omega(n^24 L^12))'),
    TheoryWidth(
        source='Zou and Gu 2019 (NeurIPS; arXiv 1906.04688)',
        exponent=8, bound='m = Omega(n^8 L^12)',
        quantity='width for which (stochastic) gradient descent reaches a '
        'global minimum of the training loss of a deep ReLU network',
        conditions='deep ReLU networks, separated data',
        provenance=f'lineage ({SUBQUADRATIC}); the abstract says only "a '
        'milder over-parameterization condition than previous work"'),
    TheoryWidth(
        source='Huang, Li, Song, Yang 2021, FL-NTK (ICML; arXiv 2105.05001)',
        exponent=None, bound='overparameterized; no width in the abstract',
        quantity='width for which federated averaging with multi-step local '
        'gradient descent converges to a global optimum at a linear rate',
        conditions='two-layer ReLU, FL with local updates, "properly tuned '
        'learning parameters"',
        provenance='abstract; the width in the paper\'s theorems is not '
        'checked here, so no exponent is given'),
)

NOTE = ('m*(n) is an empirical threshold of the prediction\'s accuracy: the '
        'smallest width at which the linearized prediction from H0 gives the '
        'rounds to eps within the stated error (the median over seeds). The '
        'theory\'s exponents bound a different quantity, a worst-case width '
        'sufficient for linear convergence on every dataset meeting their '
        'conditions, with lambda_0 and delta held fixed. A measured b below '
        'them does not contradict them, and a b above them would not '
        'refute them.')


def _interval(low, high, extra=''):
  if math.isnan(low) or math.isnan(high):
    return 'n/a'
  return f'[{low:.2f}, {high:.2f}]{extra}'


def _measured_rows(fit, surface, setting):
  """Markdown rows for the kit's exponent(s)."""
  rows = []
  if fit is not None:
    error = f'{100 * math.expm1(fit.level):.1f}%'
    if math.isnan(fit.b):
      b = 'n/a (fewer than 2 n with an uncensored m*)'
    else:
      b = (f'{fit.b:.2f}, 95% CI ' + _interval(
          fit.ci_low, fit.ci_high,
          f' ({fit.censored_draws} of {fit.n_boot} bootstrap draws censored)'))
    censored = '; '.join(f'n = {n}: {side}-censored' for n, side in
                         fit.censored)
    rows.append(f'| This kit, measured | m*(n) = C n^b over n = '
                f'{", ".join(map(str, fit.ns)) or "none"}'
                f'{"; " + censored if censored else ""} | {b} | the '
                f'smallest width with e(n, m) <= {fit.level:g} (T within '
                f'{error} of T_pred, median over seeds) | {setting} | '
                'computed from the runs |')
  if surface is not None:
    rows.append(f'| This kit, surface fit | log e = a + beta log m + gamma '
                f'log n (beta = {surface.beta:.2f}, gamma = '
                f'{surface.gamma:.2f}) | {surface.b:.2f}, 95% CI '
                f'{_interval(surface.ci_low, surface.ci_high)} | b = '
                f'-gamma/beta over {surface.cells} cells | {setting} | '
                'computed from the runs |')
  return rows


def comparison_table(fit=None, surface=None, setting: str = '') -> str:
  """Markdown: the theory's widths, the measured b beside them, and NOTE.

  fit: a width_threshold.ExponentFit (or None); surface: a SurfaceFit (or
  None); setting: the kit's conditions, in words, for its rows.
  """
  lines = ['| Source | Width | Exponent of n | What it bounds | Conditions '
           '| Where the number comes from |', '|' + ' --- |' * 6]
  for w in THEORY_WIDTHS:
    exponent = 'not stated' if w.exponent is None else f'{w.exponent:g}'
    lines.append(f'| {w.source} | {w.bound} | {exponent} | {w.quantity} | '
                 f'{w.conditions} | {w.provenance} |')
  lines += _measured_rows(fit, surface, setting)
  return '\n'.join(lines) + '\n\n' + NOTE
