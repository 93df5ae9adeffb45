"""Computing S runs as one stack: seeds of one configuration trained by one
computation (stacking.py), each seed's rounds yielded as its own run's
(training.Rounds), so that recording.py writes each into its own run
directory as it would a run alone. Writes nothing.

    stack = stacked_training.Stack([training.Setup.prepare(c) for c in configs])
    runs = [recording.RecordedRun(member) for member in stack.members]
    # driver.train_stack iterates the runs in lockstep, round by round

A member is a run's setup to the recorder (config, data, spec, predict,
facts, started). The first member to start builds the stacked computations
and starts the engine; the last to end stops it. The first member to ask
for round t runs it for every seed (one TFF call, StackedProcess's looped
default: each seed's bits are those of its run alone); the others take
their seed's slice. Round t's system/round_time_s is the stacked round's
time over the members that record round t, and the member that ran it is
charged only that share of its compute time (others_s), so the trials'
times add up to the time spent; an evaluation call evaluates every seed
and is charged alike to the members that measure w^t. Members may
differ in their budget (config.rounds); a seed that diverged ends its run
and the others go on (no operation mixes seeds).
"""

import contextlib
import dataclasses
import time

from tff_localsgd import config as config_lib
from tff_localsgd import engines
from tff_localsgd import process as process_lib
from tff_localsgd import results
from tff_localsgd import stacking
from tff_localsgd import training


@dataclasses.dataclass(frozen=True, eq=False)
class StackedRound:
  """Round t of every seed: weights w_s^t stacked [S, ...]; out: the round's
  metrics (local_loss [S], and `start`, the sums of w_s^{t-1}, if the round
  computed them); cohorts: each seed's S_t; share_s: its time over the
  members that record it."""
  weights: tuple
  out: dict
  cohorts: tuple
  share_s: float

  def start(self, s: int):
    """Seed s's evaluation sums of w_s^{t-1}, or None."""
    start = self.out.get('start')
    return None if start is None else {k: v[s] for k, v in start.items()}


class _Computations:
  """The stacked computations, their clients and the engine they run on."""

  def __init__(self, setups, log_path):
    first = setups[0]
    tick = time.perf_counter()
    self.proc = stacking.StackedProcess(
        [setup.spec for setup in setups], first.config,
        first.data.input_shape, first.data.output_dim)
    self.clients = stacking.StackedClients(
        [setup.config.seed for setup in setups],
        [setup.data for setup in setups], first.config.num_clients)
    self.all = self.clients.cohort(
        [range(first.config.num_clients)] * len(setups), 0)
    self.test = None
    if first.data.test_x is not None:
      self.test = stacking.stack_clients([[process_lib.client_data(
          setup.data.test_x, setup.data.test_y, setup.config.seed, 0, 0, 1)]
                                          for setup in setups])
    trace_s = time.perf_counter() - tick
    tick = time.perf_counter()
    self._engine = contextlib.ExitStack()
    running = self._engine.enter_context(
        engines.engine(first.config, log_path=log_path))
    engine_s = time.perf_counter() - tick
    tick = time.perf_counter()
    engines.prepare(running, [self.proc.iterative_process.next,
                              self.proc.evaluate])
    trace_s += time.perf_counter() - tick
    share = 1 / len(setups)
    self.startup = results.Startup(trace_s * share, engine_s * share)

  def close(self):
    self._engine.close()


class Stack:
  """S fresh runs of configs that differ only in seed, budget and run
  directory (config.check_stack), as one computation: `members`, one per
  setup (training.Setup)."""

  def __init__(self, setups):
    config_lib.check_stack([setup.config for setup in setups])
    self.setups = tuple(setups)
    self.members = tuple(Member(self, s) for s in range(len(setups)))
    self._live = set(range(len(setups)))
    self._computations = None
    self._rounds = {}  # t -> StackedRound, the last two
    self._sums = {}  # (t, test) -> evaluation sums [S]
    self._others = [0.0] * len(setups)

  def enter(self, s: int, log_path) -> results.Startup:
    """Member s starts: the computations built and the engine started by
    the first; each member's share of that start-up."""
    if self._computations is None:
      self._computations = _Computations(self.setups, log_path)
    elif log_path:  # the run's files are those of a run alone (native.py)
      open(log_path, 'ab').close()
    return self._computations.startup

  def leave(self, s: int):
    """Member s ended; the last to end stops the engine."""
    self._live.discard(s)
    if not self._live:
      self.close()

  def close(self):
    """Stops the engine, if it runs (driver.train_stack's last word)."""
    if self._computations is not None:
      self._computations.close()
      self._computations = None

  def weights(self, t: int):
    """Every seed's w^t, stacked."""
    if t == 0:
      return tuple(self._computations.proc.spec.initial_weights)
    return self._rounds[t].weights

  def round(self, t: int, puller: int) -> StackedRound:
    """Round t of every seed, run at the first member's asking."""
    if t not in self._rounds:
      self._run(t, puller)
    return self._rounds[t]

  def _users(self, t: int, test=None) -> list:
    """The members that will read round t (test None), or the evaluation
    of w^t on the test set (True) or the training clients (False; a round
    that computes `start` leaves only a run's last round to it)."""
    users = []
    for s in sorted(self._live):
      config = self.setups[s].config
      measures = t % config.eval_every == 0 or t == config.rounds
      if config.rounds < t or (test is not None and not measures):
        continue
      if test is False and self._computations.proc.evaluates_start and (
          t < config.rounds):
        continue
      users.append(s)
    return users

  def _charge(self, seconds: float, puller: int, users):
    """The puller ran it; each user pays an equal share."""
    users = set(users) | {puller}
    self._others[puller] += seconds
    for s in users:
      self._others[s] -= seconds / len(users)

  def _run(self, t: int, puller: int):
    setups, comp = self.setups, self._computations
    tick = time.perf_counter()
    cohorts = tuple(training.sample_cohort(
        setup.config.seed, t, setup.config.num_clients,
        setup.config.cohort_size) for setup in setups)
    weights, out = comp.proc.next(self.weights(t - 1),
                                  comp.clients.cohort(cohorts, t))
    seconds = time.perf_counter() - tick
    users = self._users(t)
    self._charge(seconds, puller, users)
    self._rounds = {k: v for k, v in self._rounds.items() if k >= t - 1}
    self._rounds[t] = StackedRound(tuple(weights), dict(out), cohorts,
                                   seconds / max(1, len(users)))
    self._sums = {k: v for k, v in self._sums.items() if k[0] >= t - 1}

  def sums(self, t: int, test: bool, s: int) -> dict:
    """Seed s's evaluation sums of w_s^t (training clients, or test set):
    one evaluation of every seed, kept for the others."""
    if (t, test) not in self._sums:
      comp = self._computations
      tick = time.perf_counter()
      self._sums[t, test] = comp.proc.evaluate(
          self.weights(t), comp.test if test else comp.all)
      self._charge(time.perf_counter() - tick, s, self._users(t, test))
    return {k: v[s] for k, v in self._sums[t, test].items()}

  def others_s(self, s: int) -> float:
    """Seconds member s's last pull spent on the other members' rounds
    (negative: its share of a round another member ran)."""
    seconds, self._others[s] = self._others[s], 0.0
    return seconds


class _SeedRound(training.MeasuredRound):
  """Seed s's rounds, sliced from the stack's."""

  def __init__(self, stack: Stack, s: int, prediction):
    self.stack, self.s, self.prediction = stack, s, prediction
    setup = stack.setups[s]
    self.config, self.data = setup.config, setup.data

  def _sums(self, t, weights, test: bool):
    del weights  # the stack holds every seed's w^t
    return self.stack.sums(t, test, self.s)

  def initial(self) -> results.RoundResult:
    return results.RoundResult(
        0, stacking.seed_weights(self.stack.weights(0), self.s), {})

  def train(self, t, weights) -> results.TrainedRound:
    del weights  # the stack holds every seed's w^{t-1}
    s = self.s
    done = self.stack.round(t, s)
    trained = results.TrainedRound(
        stacking.seed_weights(done.weights, s),
        {'train/local_loss': float(done.out['local_loss'][s])},
        start=done.start(s))
    return self.timed(trained, done.share_s, done.cohorts[s])

  def others_s(self) -> float:
    return self.stack.others_s(self.s)


class Member:
  """Seed s of a Stack, as the setup of its own run (training.Setup's
  fields and methods, for recording.RecordedRun)."""

  def __init__(self, stack: Stack, s: int):
    self.stack, self.s = stack, s
    setup = stack.setups[s]
    self.config, self.data, self.spec = setup.config, setup.data, setup.spec
    self.predict = setup.predict

  def facts(self) -> dict:
    """The run's facts (training.Setup.facts), and `stack`: the runs it
    was trained with (seeds and run directories, in order) and its index."""
    setups = self.stack.setups
    return dict(self.stack.setups[self.s].facts(), stack=dict(
        index=self.s, seeds=[setup.config.seed for setup in setups],
        experiments=[setup.config.experiment for setup in setups]))

  @contextlib.contextmanager
  def started(self, prediction=None, log_path=None):
    """This seed's training.Rounds while the stack runs (Setup.started).
    A stack trains fresh runs only: iterate(start) must be None."""
    startup = self.stack.enter(self.s, log_path)
    try:
      yield training.Rounds(_SeedRound(self.stack, self.s, prediction),
                            startup)
    finally:
      self.stack.leave(self.s)
