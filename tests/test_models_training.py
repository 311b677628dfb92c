import itertools

import numpy as np
import pytest
import torch

from flsec_flower.config import TrainingConfig
from flsec_flower.data import load_dataset
from flsec_flower.models import MODELS, build_model, get_weights, set_weights
from flsec_flower.training import EvalResult, evaluate, train_local


@pytest.mark.parametrize(
    ("name", "shape", "classes", "out"),
    [
        ("logreg", (1, 8, 8), 10, 10),
        ("mlp", (1, 28, 28), 10, 10),
        ("lenet5", (1, 28, 28), 10, 10),
        ("lenet5", (1, 8, 8), 10, 10),
        ("cnn_cifar", (3, 32, 32), 10, 10),
        ("resnet18", (3, 32, 32), 100, 100),
        ("vgg11_gn", (3, 32, 32), 10, 10),
        ("adult_mlp", (103,), 2, 1),
    ],
)
def test_output_shapes(name, shape, classes, out):
    model = build_model(name, shape, classes)
    assert model(torch.zeros(3, *shape)).shape == (3, out)


def test_every_model_is_covered_and_unknown_rejected():
    assert set(MODELS) == {
        "logreg",
        "mlp",
        "lenet5",
        "cnn_cifar",
        "resnet18",
        "vgg11_gn",
        "adult_mlp",
        "cnn_diversefl",
        "resnet50",
    }
    with pytest.raises(ValueError, match="unknown model 'resnet101'"):
        build_model("resnet101", (3, 32, 32), 10)


def test_model_sizes_match_papers():
    mlp = build_model("mlp", (1, 28, 28), 10)
    assert sum(p.numel() for p in mlp.parameters()) == 784 * 200 + 200 + 200 * 200 + 200 + 2010
    adult = build_model("adult_mlp", (103,), 2)
    assert sum(p.numel() for p in adult.parameters()) == 103 * 100 + 100 + 100 * 100 + 100 + 101
    resnet = build_model("resnet18", (3, 32, 32), 10)
    assert 11.0e6 < sum(p.numel() for p in resnet.parameters()) < 11.3e6


def test_seeded_init_and_weight_roundtrip():
    a = build_model("lenet5", (1, 28, 28), 10, seed=1)
    b = build_model("lenet5", (1, 28, 28), 10, seed=1)
    c = build_model("lenet5", (1, 28, 28), 10, seed=2)
    wa, wb, wc = get_weights(a), get_weights(b), get_weights(c)
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(wa, wc, strict=True))
    set_weights(c, wa)
    assert all(np.array_equal(x, y) for x, y in zip(get_weights(c), wa, strict=True))
    with pytest.raises(ValueError, match="shape"):
        set_weights(c, [np.zeros((2, 2)), *wa[1:]])


def test_local_training_raises_digits_accuracy():
    ds = load_dataset("digits", seed=0)
    model = build_model("mlp", ds.input_shape, ds.num_classes, seed=0)
    before = evaluate(model, ds.x_test, ds.y_test, ds.num_classes)
    cfg = TrainingConfig(local_epochs=10, batch_size=32, lr=0.05)
    loss = train_local(model, ds.x_train, ds.y_train, cfg, torch.Generator().manual_seed(0))
    after = evaluate(model, ds.x_test, ds.y_test, ds.num_classes)
    assert np.isfinite(loss)
    assert before.accuracy < 0.3 < 0.85 < after.accuracy


def test_adam_and_grad_clip_train():
    ds = load_dataset("digits", seed=0)
    model = build_model("logreg", ds.input_shape, ds.num_classes, seed=0)
    cfg = TrainingConfig(local_epochs=3, optimizer="adam", lr=1e-2, grad_clip=1.0)
    train_local(model, ds.x_train, ds.y_train, cfg, torch.Generator().manual_seed(0))
    assert evaluate(model, ds.x_test, ds.y_test, ds.num_classes).accuracy > 0.85


def test_per_class_accuracy_and_bias_by_hand():
    model = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3, 2))  # predicts argmax(x0, x1, 0)
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, -1.0]])
    y = torch.tensor([0, 1, 1, 0, 2])
    res = evaluate(model, x, y, num_classes=3)
    assert res.accuracy == pytest.approx(4 / 5)
    assert res.per_class_accuracy == pytest.approx([1.0, 0.5, 1.0])
    assert res.bias == pytest.approx(0.5)
    assert EvalResult(0.0, 1.0, [0.5, float("nan"), 0.75]).bias == pytest.approx(0.25)


def test_binary_single_logit_training():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g)
    y = (x[:, 0] > 0).long()
    model = build_model("adult_mlp", (5,), 2, seed=0)
    train_local(model, x, y, TrainingConfig(local_epochs=20, lr=0.1), g)
    assert evaluate(model, x, y, 2).accuracy > 0.9


def test_max_steps_counts_mini_batches_across_epochs():
    x, y = torch.randn(10, 1, 8, 8), torch.arange(10) % 10
    model = build_model("logreg", (1, 8, 8), 10)
    seen = []

    def count(xb, yb):
        seen.append(len(yb))
        return xb, yb

    cfg = TrainingConfig(local_epochs=1, batch_size=4)
    train_local(
        model, x, y, cfg, torch.Generator().manual_seed(0), batch_transform=count, max_steps=7
    )
    assert seen == [4, 4, 2, 4, 4, 2, 4]


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def test_paper_model_parameter_counts():
    # DiverseFL softmax regression and 200-200 MLP on MNIST.
    assert count(build_model("logreg", (1, 28, 28), 10)) == dense(784, 10) == 7850
    assert count(build_model("mlp", (1, 28, 28), 10)) == dense(784, 200) + dense(200, 200) + dense(
        200, 10
    )
    # Ozdayi et al.: 3 conv (64-128-256, 3x3, unpadded) + 3 dense (1024-128-256-10).
    ozdayi = conv(3, 64, 3) + conv(64, 128, 3) + conv(128, 256, 3)
    ozdayi += dense(256 * 2 * 2, 128) + dense(128, 256) + dense(256, 10)
    assert count(build_model("cnn_cifar", (3, 32, 32), 10)) == ozdayi
    # DiverseFL Table 2.
    small = conv(3, 16, 3) + conv(16, 64, 4) + dense(64, 384) + dense(384, 192) + dense(192, 10)
    assert count(build_model("cnn_diversefl", (3, 32, 32), 10)) == small == 117_706
    # DiverseFL Table 1: 8 convs with group norm (weight + bias per channel), 512-4096-4096-10.
    widths = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    vgg = sum(conv(a, b, 3) + 2 * b for a, b in itertools.pairwise(widths))
    vgg += dense(512, 4096) + dense(4096, 4096) + dense(4096, 10)
    assert count(build_model("vgg11_gn", (3, 32, 32), 10)) == vgg
    # torchvision ResNet-50 (25,557,032 params, 1000 classes) with a 3x3 CIFAR stem, 10 classes.
    resnet50 = 25_557_032 - 3 * 64 * 7 * 7 + 3 * 64 * 3 * 3 - dense(2048, 1000) + dense(2048, 10)
    assert count(build_model("resnet50", (3, 32, 32), 10)) == resnet50


def test_vgg11_gn_follows_diversefl_table1_layers():
    model = build_model("vgg11_gn", (3, 32, 32), 10)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert all(m.num_channels // m.num_groups == 16 for m in norms)
    assert all(float(m.weight.min()) == 1.0 and float(m.bias.abs().max()) == 0.0 for m in norms)
    drops = sorted(m.p for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert drops == [0.2] * 8 + [0.5] * 2
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(float(m.bias.abs().max()) == 0.0 for m in convs)


def test_zero_init():
    model = build_model("logreg", (1, 28, 28), 10, seed=3, init="zeros")
    assert all(float(p.abs().max()) == 0.0 for p in model.parameters())
    seeded = build_model("logreg", (1, 28, 28), 10, seed=3)
    assert float(seeded[1].weight.abs().sum()) > 0
    with pytest.raises(ValueError, match="init"):
        build_model("logreg", (1, 28, 28), 10, init="ones")
