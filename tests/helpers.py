"""Shared pieces of the tests: the book's PyTorch training run (the book's network and the sampler that
replays PyTorch's order live in `fundamentals.testing`, shared with the notebooks and the benchmark)."""

from fundamentals.testing import ReplaySampler, torch_network  # noqa: F401 - re-exported for the tests


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
