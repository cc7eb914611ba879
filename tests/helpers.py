"""Shared pieces of the tests: the book's PyTorch training run (the book's network and the sampler that
replays PyTorch's order live in `fundamentals.testing`, shared with the notebooks and the benchmark)."""

from fundamentals.testing import ReplaySampler, torch_network  # noqa: F401 - re-exported for the tests

# Why a comparison with PyTorch is skipped: where torch's CPU build cannot be installed (a Python
# that PyTorch's local wheels do not cover), the rest of the suite still runs.
TORCH_MISSING = (
    "torch==2.13.0 is not installed here: the comparisons with PyTorch are skipped "
    "(pip install torch==2.13.0, its CPU build on Linux as the README says, runs them)"
)


def torch_book_training(torch, X_train, y_train, num_epochs=3, lr=0.5, momentum=0.0):
    """The book's training run (listing A.9) with seed 123; returns the initial state dict,
    the per-epoch index orders, every step's loss and the trained network."""
    import torch.nn.functional as F

    torch.manual_seed(123)
    network = torch_network(torch, 2, 2)
    initial = {k: v.detach().clone() for k, v in network.state_dict().items()}
    indices = torch.arange(len(X_train))
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(X_train), torch.from_numpy(y_train), indices)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=True, drop_last=True)
    optimizer = torch.optim.SGD(network.parameters(), lr=lr, momentum=momentum)
    orders, losses = [], []
    for _ in range(num_epochs):
        network.train()
        order = []
        for features, labels, index in loader:
            loss = F.cross_entropy(network(features), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            order.extend(index.tolist())
        orders.append(order)
    return initial, orders, losses, network


def cross_entropy_by_hand(logits, labels) -> float:
    """Mean softmax cross-entropy in float64 NumPy, written out: log-sum-exp minus the label's logit."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    return float(np.mean(log_norm - z[np.arange(len(z)), np.asarray(labels)]))


def plain_jax_training(model, optimizer, batches, loss=None):
    """A hand-written training loop in plain JAX: one `jax.jit` step a batch, Optax's own loss.

    The independent truth for `fit`: no chunks, no cache, no `TrainState`. Returns the trained
    model and every step's loss.
    """
    import equinox as eqx
    import jax
    import numpy as np
    import optax

    def default_loss(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss = loss or default_loss
    params, static = eqx.partition(model, eqx.is_inexact_array)

    @jax.jit
    def step(params, opt_state, X, y):
        value, grads = jax.value_and_grad(lambda p: loss(eqx.combine(p, static)(X), y))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = optimizer.init(params)
    losses = []
    for X, y, *_ in batches:
        params, opt_state, value = step(params, opt_state, np.asarray(X), np.asarray(y))
        losses.append(float(value))
    return eqx.combine(params, static), losses
