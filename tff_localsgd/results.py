"""What a run produces, as plain immutable data: no TensorFlow here.

- a trial's status and its exit code (one table: the binaries, the trial
  workers, the sweep and the suite all read it);
- RoundResult, one round of `training.rounds`, and TrainedRound, a round's
  training step before w^t is measured (a diagnostic round's too);
- Startup, the start-up seconds of the rounds, and the phases of a run
  (summary.json's phases_s).

Each type is frozen and holds no mutable container: metrics and histograms
are read-only mappings and step rows a tuple of them, copied when the object
is built, so a result cannot change after it is made.
"""

import dataclasses
import math
import types

# A run's status (summary.json's `status`).
RUNNING = 'running'
COMPLETED = 'completed'
DIVERGED = 'diverged'
INTERRUPTED = 'interrupted'  # stopped by a signal, after a checkpoint
FAILED = 'failed'  # raised (the sweep also records a trial failed)

# The status a run ends in, and the exit code of the process that ran it.
EXIT_CODES = types.MappingProxyType({COMPLETED: 0, DIVERGED: 3,
                                     INTERRUPTED: 130})
EXIT_ERROR = 1  # an exception: no status
EXIT_BAD_INPUT = 2  # bad flags, data, workers or checkpoint: nothing ran
EXIT_STOPPED = EXIT_CODES[INTERRUPTED]
# A run in one of these states is finished: a sweep skips it when rerun.
DONE = (COMPLETED, DIVERGED)


def exit_code(status: str) -> int:
  """The exit code of a run that ended with `status` (a run still running
  or failed was stopped: EXIT_STOPPED)."""
  return EXIT_CODES.get(status, EXIT_STOPPED)


def done_status(code) -> str | None:
  """The finished status (DONE) an exit code says, or None."""
  return next((s for s in DONE if EXIT_CODES[s] == code), None)


# The seconds of one run by phase (summary.json's phases_s), in order: the
# process's start-up and the data (given by the caller), the theory (the
# prediction), trace (building the TFF computations, and compiling them on
# the in-process engine), engine (starting and stopping it), rounds and
# diagnostics (system/round_time_s and system/diag_time_s summed),
# evaluation (the rest of producing the rounds: F(w^t) where the round does
# not compute it, the native engine's first calls), writing (the RunDir).
PHASES = ('startup_s', 'data_s', 'theory_s', 'trace_s', 'engine_s',
          'rounds_s', 'diagnostics_s', 'evaluation_s', 'writing_s')
# The phases that are training: a suite's share of time "inside rounds".
TRAINING_PHASES = ('rounds_s', 'diagnostics_s')

TIMING_PREFIX = 'system/'
THEORY_PREFIX = 'theory/'


def frozen_mapping(values) -> types.MappingProxyType:
  """A read-only copy of a mapping (a new dict behind the proxy)."""
  return types.MappingProxyType(dict(values or {}))


@dataclasses.dataclass(frozen=True)
class Startup:
  """The start-up of a run's rounds: trace_s, building the TFF computations
  (none for those an earlier run of the process shared) and compiling them
  for the in-process engine; engine_s, starting the engine."""
  trace_s: float
  engine_s: float


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous
class TrainedRound:
  """A round's training step from w^{t-1}, before w^t is measured.

  weights: w^t; metrics: {tag: float} of the step; histograms: {tag:
  float32[N]}; step_rows: a lockstep round's drift per local step,
  ({'local_step': k, name: value}, ...); start: the evaluation sums of
  w^{t-1} when the round's call computed them (process.py's `start`), else
  None.
  """
  weights: tuple
  metrics: types.MappingProxyType
  histograms: types.MappingProxyType = dataclasses.field(
      default_factory=dict)
  step_rows: tuple = ()
  start: object = None

  def __post_init__(self):
    _freeze(self)


@dataclasses.dataclass(frozen=True, eq=False)
class RoundResult:
  """One round: w^t and what was measured of it.

  metrics: {tag: float} in the order they were measured (system/* are the
  round's timings); histograms: {tag: float32[N]} per-client values;
  step_rows: a lockstep round's drift per local step k, ({'local_step': k,
  name: value}, ...), when --diag_per_step.
  """
  round: int
  weights: tuple
  metrics: types.MappingProxyType
  histograms: types.MappingProxyType = dataclasses.field(
      default_factory=dict)
  step_rows: tuple = ()

  def __post_init__(self):
    _freeze(self)

  @property
  def timings(self) -> dict:
    return {k: v for k, v in self.metrics.items()
            if k.startswith(TIMING_PREFIX)}

  @property
  def diverged(self) -> bool:
    return not all(math.isfinite(self.metrics.get(k, 0.0))
                   for k in ('train/loss', 'train/local_loss'))

  def measured(self, metrics, histograms) -> 'RoundResult':
    """This round with more measurements, added after its own (a tag
    measured again keeps its place and takes the new value)."""
    return dataclasses.replace(
        self, metrics={**self.metrics, **metrics},
        histograms={**self.histograms, **histograms})


def _freeze(result):
  """Read-only copies of a result's containers (frozen: object.__setattr__)."""
  object.__setattr__(result, 'weights', tuple(result.weights))
  object.__setattr__(result, 'metrics', frozen_mapping(result.metrics))
  object.__setattr__(result, 'histograms', frozen_mapping(result.histograms))
  object.__setattr__(result, 'step_rows',
                     tuple(frozen_mapping(r) for r in result.step_rows))
