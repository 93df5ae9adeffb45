"""The paper's claims, each turned into a statistic, a criterion and a
verdict (base.py: the verdicts, and the one rule for missing trials).

A claim reads only recorded runs (analysis.runs) and the suite's plan, so a
planned trial that is not on disk is judged as missing, never dropped. Each
claim is a class in prediction.py, lazy.py, federated.py or threshold.py
whose attributes and methods are its criterion, written before the runs it
judges; the report prints the commit at which each class last changed.
"""

from tff_localsgd import suite
from tff_localsgd.sweep import grid
from tff_localsgd.analysis import runs as runs_lib
from tff_localsgd.analysis.claims import federated
from tff_localsgd.analysis.claims import lazy
from tff_localsgd.analysis.claims import prediction
from tff_localsgd.analysis.claims import threshold
from tff_localsgd.analysis.claims.base import Claim  # noqa: F401

CLAIMS = (prediction.C1(), prediction.C2(), lazy.C3(), lazy.C4(), lazy.C5(),
          federated.C6(), federated.C7(), federated.C8(), federated.C9(),
          prediction.C10(), federated.C11(), prediction.C12(), lazy.C13(),
          threshold.C14(), prediction.C15(), federated.C16())


def with_missing(runs, steps) -> list:
  """runs plus a placeholder (status 'missing', its planned config) for
  every planned trial of steps (suite.plan) that is not on disk."""
  have = {(r.study, r.group, r.name) for r in runs}
  out = list(runs)
  for spec, label, trials in steps:
    for trial in trials:
      if (spec.name, label, trial.name) not in have:
        out.append(runs_lib.Run(spec.name, label, trial.name, '',
                                grid.trial_config(trial),
                                {'status': 'missing'}, []))
  return out


def _order(claim):
  number, _, suffix = claim.id[1:].partition('.')
  return int(number), suffix


def evaluate_claims(runs, steps=()) -> list:
  """Every claim of the report, in numeric order; steps: the suite's plan
  (suite.plan), whose trials missing from `runs` count as missing."""
  runs = with_missing(runs, steps)
  out = []
  for claim in CLAIMS:
    result = claim(runs)
    out += result if isinstance(result, list) else [result]
  return sorted(out, key=_order)


def source_of(claim_id: str):
  """(module file, class name) of a claim id ('C3.hidden_1' -> C3's)."""
  name = claim_id.split('.')[0]
  for claim in CLAIMS:
    if claim.id == name:
      return type(claim).__module__.replace('.', '/') + '.py', name
  raise KeyError(claim_id)
