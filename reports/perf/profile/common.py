"""The suite's round shape for the profile scripts: MLP d=16 -> m -> m -> 1,
only the m x m layer trained, 4 clients of 16 examples, K = 5 full-batch
steps, eta = 8 / m, the in-process engine on the CPU."""
import os

from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import models
from tff_localsgd import process


def suite_round(width: int):
  """(config, data, spec, values(t)): the round's inputs; the environment's
  K and CFG (a dict literal of config fields) override the shape."""
  config = config_lib.ExperimentConfig(**{**dict(
      num_examples=64, input_dim=16, num_clients=4, width=width, depth=1,
      train_layers='hidden', lr_scale='width', client_lr=8.0,
      algorithm='local_gd', local_steps=int(os.environ.get('K', 5)),
      rounds=30, seed=0, engine='inprocess', device='/CPU:0'),
      **eval(os.environ.get('CFG', 'dict()'))}).validate()
  data = data_lib.load_federated_data(config)
  spec = models.build_model(config, data.input_shape, data.output_dim)

  def values(t):
    return [process.client_data(x, y, config.seed, t, i, config.num_clients)
            for i, (x, y) in enumerate(zip(data.client_x, data.client_y))]
  return config, data, spec, values
