"""Shared pieces of the tests: the book's PyTorch network and training run (the sampler that replays
PyTorch's order lives in `fundamentals.testing`, shared with the notebooks)."""

from fundamentals.testing import ReplaySampler  # noqa: F401 - re-exported for the tests


def torch_network(torch, num_inputs, num_outputs, hidden=(30, 20)):
    """The book's listing A.4 (hidden sizes as a parameter for the CLI tests)."""

    class NeuralNetwork(torch.nn.Module):
        def __init__(self, num_inputs, num_outputs):
            super().__init__()
            self.layers = torch.nn.Sequential(
                torch.nn.Linear(num_inputs, hidden[0]),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden[0], hidden[1]),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden[1], num_outputs),
            )

        def forward(self, x):
            return self.layers(x)

    return NeuralNetwork(num_inputs, num_outputs)


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
