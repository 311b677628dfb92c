"""robustdigits: a small PyTorch model on scikit-learn's digits (no download)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

SPLIT_SEED = 2024
"""Seed of the train/test split and of the partition: every node computes the same one."""


class Net(nn.Module):
    """A multilayer perceptron for 8x8 digit images: 64 -> 32 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits."""
        return self.layers(x)


def _digits() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """All digits (pixels scaled to [0, 1]) and the indices of the train and test split (80/20)."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    cut = int(0.8 * len(y))
    features = torch.tensor(x / 16.0, dtype=torch.float32)
    return features, torch.tensor(y, dtype=torch.long), order[:cut], order[cut:]


def load_data(
    partition_id: int, num_partitions: int, batch_size: int
) -> tuple[DataLoader, DataLoader]:
    """The node's IID share of the training split: 80 % to train on, 20 % to validate."""
    x, y, train, _ = _digits()
    part = np.array_split(train, num_partitions)[partition_id]
    cut = int(0.8 * len(part))
    fit, val = part[:cut], part[cut:]
    generator = torch.Generator().manual_seed(partition_id)
    trainloader = DataLoader(
        TensorDataset(x[fit], y[fit]), batch_size=batch_size, shuffle=True, generator=generator
    )
    return trainloader, DataLoader(TensorDataset(x[val], y[val]), batch_size=batch_size)


def load_centralized_dataset() -> DataLoader:
    """The held-out test split, for the server's evaluation of the global model."""
    x, y, _, test = _digits()
    return DataLoader(TensorDataset(x[test], y[test]), batch_size=128)


def train(net: Net, trainloader: DataLoader, epochs: int, lr: float, device: str) -> float:
    """Train with SGD; return the mean training loss."""
    net.to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    net.train()
    total, batches = 0.0, 0
    for _ in range(epochs):
        for images, labels in trainloader:
            optimizer.zero_grad()
            loss = criterion(net(images.to(device)), labels.to(device))
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
    return total / max(batches, 1)


def test(net: Net, testloader: DataLoader, device: str) -> tuple[float, float]:
    """Return the mean loss and the accuracy on ``testloader``."""
    net.to(device)
    net.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss, correct = 0.0, 0
    with torch.no_grad():
        for images, labels in testloader:
            out = net(images.to(device))
            loss += criterion(out, labels.to(device)).item()
            correct += (out.argmax(1) == labels.to(device)).sum().item()
    n = len(testloader.dataset)
    return loss / n, correct / n
