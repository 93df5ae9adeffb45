"""Runs a TFF worker for `--engine=remote`: TFF's own worker_binary.

  python -m benchmarks.worker --port=8000

Starts `tensorflow_federated/data/worker_binary --port=P` from the installed
TFF wheel in the foreground (its log goes to this stderr) and forwards
SIGINT and SIGTERM to it; it also dies if this process is killed. The exit
status is the worker's (128 + signal if a signal ended it).

worker_binary (TFF 0.87) has no flag for the address: it always listens on
every interface ([::]:P, IPv4 and IPv6). It has no authentication and no
TLS, and a TFF computation may contain any TensorFlow op (ReadFile,
WriteFile, ...), so whoever can reach the port can read and write this
user's files. This wrapper checks where the worker listens and warns on
stderr if that is not loopback only. Run workers only on a private network
(a docker network without -p, an SSH tunnel, a firewalled subnet); never
publish the port. The wrapper itself reads nothing from the network.

No TensorFlow here: the wrapper only needs the binary's path, and a worker
host should not carry a second copy of TensorFlow in memory.
"""

import ipaddress
import signal
import socket
import subprocess
import sys
import time

from absl import app
from absl import flags
import psutil

from benchmarks import flags as flag_defs
from tff_localsgd import worker_binary

flags.DEFINE_integer('port', None, 'TCP port the TFF worker serves on '
                     '(1-65535); it listens on every interface')
flags.DEFINE_float('listen_check_s', 30.0, 'how long to wait for the worker '
                   'to listen before warning that its address is unknown')


def _check_port(port):
  if port is None or not 1 <= port <= 65535:
    flag_defs.exit_bad_input(f'--port: give a TCP port in 1..65535, not {port}')
  with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
    try:
      s.bind(('::', port))  # where worker_binary will bind
    except OSError as e:
      flag_defs.exit_bad_input(f'--port: {port} is not free here ({e.strerror})')


def listening_addresses(pid: int, port: int, timeout_s: float):
  """The local IPs process `pid` listens on at `port`, once it does, or []."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    try:
      found = sorted({c.laddr.ip for c in psutil.Process(pid).net_connections(
          kind='tcp') if c.status == psutil.CONN_LISTEN and
                      c.laddr.port == port})
    except psutil.Error:
      return []
    if found:
      return found
    time.sleep(0.2)
  return []


def exposure_warning(ips, port) -> str | None:
  """The warning for a worker listening on `ips`, or None if loopback only."""
  if ips and all(ipaddress.ip_address(ip.split('%')[0]).is_loopback
                 for ip in ips):
    return None
  where = (', '.join(f'[{ip}]:{port}' if ':' in ip else f'{ip}:{port}'
                     for ip in ips) + (' (every interface)' if any(
                         ipaddress.ip_address(ip).is_unspecified
                         for ip in ips) else '')
           if ips else f'an unknown address, port {port}')
  return (f'warning: the TFF worker listens on {where}. It has no '
          'authentication and no TLS, and whoever reaches this port can run '
          'TensorFlow ops as this user (read and write files). Run it only on '
          'a private network (a docker network without -p, an SSH tunnel, a '
          'firewalled subnet) and never publish the port.')


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  port = flags.FLAGS.port
  _check_port(port)
  # Its own session: a Ctrl-C in the terminal reaches only us, and we pass
  # it on once.
  worker = subprocess.Popen(
      worker_binary.command(port),
      stdin=subprocess.DEVNULL, start_new_session=True,
      preexec_fn=worker_binary.die_with_parent)

  def forward(signum, frame):
    if worker.poll() is None:
      worker.send_signal(signum)
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, forward)

  ips = listening_addresses(worker.pid, port, flags.FLAGS.listen_check_s)
  if worker.poll() is None:
    print(f'TFF worker_binary (pid {worker.pid}) serving on port {port}; '
          'stop it with Ctrl-C or SIGTERM', file=sys.stderr, flush=True)
    warning = exposure_warning(ips, port)
    if warning:
      print(warning, file=sys.stderr, flush=True)
  status = worker.wait()
  return 128 - status if status < 0 else status


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
