A_, W_, B_ = [tf.constant(w) for w in spec.initial_weights]
X = tf.constant(np.stack(data.client_x)); Y = tf.constant(np.stack(data.client_y))
lr = config.lr; N = config.num_clients
def loss_of(W, xi, yi):
  h = tf.nn.relu(tf.matmul(tf.nn.relu(tf.matmul(xi, A_)), W))
  return 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(tf.matmul(h, B_) - yi), -1), -1)
@tf.function
def batched(W):
  local = tf.tile(W[None], [N, 1, 1])
  ev = tf.reduce_sum(loss_of(W, X, Y))
  for _ in range(K):
    with tf.GradientTape() as tape:
      tape.watch(local); total = tf.reduce_sum(loss_of(local, X, Y))
    local = local - lr * tape.gradient(total, local)
  return tf.reduce_mean(local, 0), ev
@tf.function
def per_client(W):
  outs = []; ev = 0.
  for i in range(N):
    w = W; ev += loss_of(W, X[i], Y[i])
    for _ in range(K):
      with tf.GradientTape() as tape:
        tape.watch(w); l = loss_of(w, X[i], Y[i])
      w = w - lr * tape.gradient(l, w)
    outs.append(w)
  return tf.add_n(outs) / N, ev
def wrap(fn):
  def run(w, v):
    nw, ev = fn(tf.constant(w[1]))
    return (w[0], nw.numpy(), w[2]), ev.numpy()
  return run
variants['plain_batched'] = wrap(batched)
variants['plain_per_client'] = wrap(per_client)
