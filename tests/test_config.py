"""ExperimentConfig: the derived values against hand computation, every
validation naming its field, and flag strings read back as absl reads them."""

import dataclasses

import pytest

from tff_localsgd import config as config_lib

Config = config_lib.ExperimentConfig


def test_lr_is_client_lr_or_client_lr_over_width():
  assert Config(client_lr=4.0, width=512, lr_scale='width').lr == 4.0 / 512
  assert Config(client_lr=0.1, width=512, lr_scale='none').lr == 0.1


def test_cohort_is_every_client_unless_sampled():
  assert Config(num_clients=8, clients_per_round=0).cohort_size == 8
  assert Config(num_clients=8, clients_per_round=3).cohort_size == 3


@pytest.mark.parametrize('algorithm, want', [
    # K * B per client for SGD: 5 * 16 * 3 clients.
    ('local_sgd', 5 * 16 * 3),
    ('minibatch_sgd', 5 * 16 * 3),
    # K * n_i for Local GD: 5 * (10 + 20 + 30).
    ('local_gd', 5 * 60)])
def test_examples_per_round(algorithm, want):
  config = Config(algorithm=algorithm, local_steps=5, batch_size=16)
  assert config.examples_per_round([10, 20, 30]) == want


def test_seedless_is_equal_for_runs_differing_in_seed_budget_and_place():
  a = Config(seed=1, root_dir='x', experiment='a')
  b = Config(seed=7, rounds=9, root_dir='y', experiment='b')
  assert a.seedless() == b.seedless()
  assert a.seedless() != Config(seed=1, width=64).seedless()


def test_from_dict_round_trips_and_names_an_unknown_field():
  config = Config(width=64, seed=3)
  assert Config.from_dict(dataclasses.asdict(config)) == config
  with pytest.raises(config_lib.ConfigError) as e:
    Config.from_dict({'widht': 64})
  assert e.value.field == 'widht'


# (field values, the field the error names)
BAD = [
    (dict(dataset='svhn'), 'dataset'),
    (dict(width=0), 'width'),
    (dict(client_lr=float('nan')), 'client_lr'),
    (dict(server_lr=-1.0), 'server_lr'),
    (dict(eps=1.0), 'eps'),
    (dict(seed=-1), 'seed'),
    (dict(num_examples=0), 'num_examples'),
    (dict(num_examples=4, num_clients=8), 'num_clients'),
    (dict(clients_per_round=9, num_clients=8), 'clients_per_round'),
    (dict(train_layers='hidden', depth=0), 'train_layers'),
    (dict(algorithm='minibatch_sgd', local_steps=2), 'local_steps'),
    (dict(model='cnn'), 'model'),
    (dict(loss='xent'), 'loss'),
    (dict(ntk_every=1, probe_size=0), 'probe_size'),
    (dict(clients_per_pack=9, num_clients=8), 'clients_per_pack'),
    (dict(jit=True, engine='native'), 'jit'),
    (dict(engine='remote'), 'workers'),
    (dict(engine='remote', workers='host:99999'), 'workers'),
    (dict(experiment='a/b'), 'experiment'),
]


@pytest.mark.parametrize('values, field', BAD,
                         ids=[f for _, f in BAD])
def test_validate_names_the_bad_field(values, field):
  with pytest.raises(config_lib.ConfigError) as e:
    Config(**values).validate()
  assert e.value.field == field
  assert str(e.value).startswith(f'--{field}: ')


def test_the_defaults_and_the_limits_validate():
  assert Config().validate() == Config()
  Config(clients_per_round=8, num_clients=8, clients_per_pack=8,
         engine='remote', workers='a:1,b:65535').validate()


def test_validate_against_data_checks_client_sizes():
  config = Config(batch_size=16, diag_every=1, probe_size=64)
  config.validate_against_data([16, 48])
  with pytest.raises(config_lib.ConfigError) as e:
    config.validate_against_data([15, 49])
  assert e.value.field == 'batch_size'
  with pytest.raises(config_lib.ConfigError) as e:
    config.validate_against_data([16, 16])  # 32 examples, probe of 64
  assert e.value.field == 'probe_size'
  # Local GD uses every example: no minibatch to fit.
  Config(algorithm='local_gd', batch_size=16).validate_against_data([3, 4])


@pytest.mark.parametrize('name, text, want', [
    ('width', ' 64 ', 64), ('client_lr', '0.5', 0.5), ('client_lr', '1', 1.0),
    ('diag_per_step', 'True', True), ('diag_per_step', '0', False),
    ('dataset', ' mnist', 'mnist')])
def test_parse_value_reads_flag_strings(name, text, want):
  value = config_lib.parse_value(name, text)
  assert value == want and type(value) is type(want)


def test_parse_value_keeps_typed_values_and_widens_int_to_float():
  assert config_lib.parse_value('width', 64) == 64
  value = config_lib.parse_value('client_lr', 2)
  assert value == 2.0 and type(value) is float


@pytest.mark.parametrize('name, value', [
    ('width', 'wide'), ('width', 64.0), ('diag_per_step', 'yes'),
    ('client_lr', True)])
def test_parse_value_names_the_field_of_a_bad_value(name, value):
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.parse_value(name, value, ' (in --grid)')
  assert e.value.field == name and '(in --grid)' in str(e.value)


def test_field_types_are_the_defaults_types():
  for name, field in config_lib.FIELDS.items():
    assert config_lib.field_type(name) is type(field.default), name
