"""Training a head on cached feature vectors, with one compiled graph per head width that every
later trial of that width reuses.

Why not `keras.Model.fit`: fit traces new train, test and predict functions for every new model,
and with a frozen backbone every trial is a new model. On 2 cores that tracing (1.5-3 s) and
fit's per-epoch machinery cost more than the training itself (benchmarks/head_training.py). Here
the weights, Adam's moments and the hyperparameters (learning rate, dropout, L2) are variables
that a trial assigns, and one call of a compiled function runs a whole epoch. The arithmetic is
Keras's: Glorot-uniform start from `build_head`, class-weighted binary cross-entropy averaged
over the batch, L2 on the hidden kernel, Keras's Adam; the objective copies the trained weights
into a real Keras head (`build_head`) so Grad-CAM, logging and retrain see what they always saw.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7  # keras.optimizers.Adam's defaults


class HeadGraph:
    """Variables and compiled functions for heads of one (input dim, width); reused across trials."""

    def __init__(self, dim: int, units: int):
        self.dim, self.units = dim, units
        shapes = ([dim, units], [units], [units, 1], [1])
        self.weights = [tf.Variable(tf.zeros(s)) for s in shapes]
        self.moments = [tf.Variable(tf.zeros(s), trainable=False) for s in shapes]
        self.velocities = [tf.Variable(tf.zeros(s), trainable=False) for s in shapes]
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.learning_rate = tf.Variable(0.0, trainable=False)
        self.dropout = tf.Variable(0.0, trainable=False)
        self.l2 = tf.Variable(0.0, trainable=False)
        self.traces = 0  # how often TensorFlow compiled the epoch function (tests check it stays 1)
        vectors = tf.TensorSpec([None, dim], tf.float32)
        vector = tf.TensorSpec([None], tf.float32)
        self.train_epoch = tf.function(self._train_epoch, input_signature=[
            vectors, vector, vector, tf.TensorSpec([2], tf.int64), tf.TensorSpec([], tf.int32)])
        self.predict = tf.function(self._forward, input_signature=[vectors])

    def reset(self, initial: list[np.ndarray], learning_rate: float, dropout: float, l2: float) -> None:
        """A new trial: fresh weights (the Keras head's own seeded start), zeroed Adam state."""
        for var, value in zip(self.weights, initial):
            var.assign(value)
        for var in self.moments + self.velocities:
            var.assign(tf.zeros_like(var))
        self.iterations.assign(0)
        self.learning_rate.assign(learning_rate)
        self.dropout.assign(dropout)
        self.l2.assign(l2)

    def penalty(self) -> tf.Tensor:
        return self.l2 * tf.reduce_sum(tf.square(self.weights[0]))

    def _logits(self, x: tf.Tensor, dropout_seed: tf.Tensor | None = None) -> tf.Tensor:
        kernel, bias, out_kernel, out_bias = self.weights
        hidden = tf.nn.relu(tf.matmul(x, kernel) + bias)
        if dropout_seed is not None:
            hidden = tf.nn.experimental.stateless_dropout(hidden, rate=self.dropout, seed=dropout_seed)
        return tf.reshape(tf.matmul(hidden, out_kernel) + out_bias, [-1])

    def _forward(self, x: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(self._logits(x))

    def _apply_adam(self, grads: list[tf.Tensor]) -> None:
        self.iterations.assign_add(1)
        step = tf.cast(self.iterations, tf.float32)
        alpha = self.learning_rate * tf.sqrt(1 - ADAM_BETA_2 ** step) / (1 - ADAM_BETA_1 ** step)
        for var, m, v, g in zip(self.weights, self.moments, self.velocities, grads):
            m.assign_add((g - m) * (1 - ADAM_BETA_1))
            v.assign_add((tf.square(g) - v) * (1 - ADAM_BETA_2))
            var.assign_sub(alpha * m / (tf.sqrt(v) + ADAM_EPSILON))

    def _train_epoch(self, x, y, sample_weight, seed, batch_size):
        """One shuffled pass in batches; returns the mean loss and the training-mode probabilities
        (with their labels, in the order seen) for the epoch's training metrics."""
        self.traces += 1
        n = tf.shape(x)[0]
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=seed)
        steps = (n + batch_size - 1) // batch_size
        probs = tf.TensorArray(tf.float32, size=steps, infer_shape=False)
        total = tf.constant(0.0)
        for i in tf.range(steps):
            idx = order[i * batch_size:tf.minimum((i + 1) * batch_size, n)]
            xb, yb, wb = tf.gather(x, idx), tf.gather(y, idx), tf.gather(sample_weight, idx)
            dropout_seed = tf.stack([seed[0], seed[1] * 1_000_003 + tf.cast(i, tf.int64)])
            with tf.GradientTape() as tape:
                logits = self._logits(xb, dropout_seed=dropout_seed)
                per_image = tf.nn.sigmoid_cross_entropy_with_logits(labels=yb, logits=logits)
                # Keras's "sum over batch size" reduction of a class-weighted loss, plus the L2 penalty
                loss = tf.reduce_sum(wb * per_image) / tf.cast(tf.size(yb), tf.float32) + self.penalty()
            self._apply_adam(tape.gradient(loss, self.weights))
            total += loss * tf.cast(tf.size(yb), tf.float32)
            probs = probs.write(i, tf.sigmoid(logits))
        return total / tf.cast(n, tf.float32), probs.concat(), tf.gather(y, order)


_GRAPHS: dict[tuple[int, int], HeadGraph] = {}


def head_graph(dim: int, units: int) -> HeadGraph:
    """The process's graph for this shape (a search process trains many heads of few widths)."""
    key = (int(dim), int(units))
    if key not in _GRAPHS:
        _GRAPHS[key] = HeadGraph(*key)
    return _GRAPHS[key]

