"""Models by name, as the reproduced papers use them.

=================  ==========================================================
name               architecture
=================  ==========================================================
``logreg``         softmax regression, one linear layer (DiverseFL, with
                   ``model.init: zeros``)
``mlp``            2 hidden layers of 200 units, ReLU (DiverseFL; He et al.'s
                   MNIST MLP, whose widths the paper does not state)
``lenet5``         LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, 120-84-classes
                   (Ozdayi et al. use it on Fashion-MNIST)
``cnn_cifar``      Ozdayi et al.'s 6-layer CIFAR-10 CNN: 3 conv + 3 dense
``cnn_diversefl``  DiverseFL's smaller CIFAR-10 CNN (supplementary Table 2)
``resnet18``       torchvision ResNet-18 with a 3x3 stride-1 stem and no max-pool
                   (Bagdasaryan et al., CIFAR-10)
``resnet50``       torchvision ResNet-50 with the same CIFAR stem (Rance & Svoboda)
``vgg11_gn``       VGG-11 with GroupNorm and dropout (DiverseFL, supplementary Table 1)
``adult_mlp``      103-100-100-1 MLP with one logit (UCI Adult; not from a paper)
=================  ==========================================================

Dense layers are sized from the input shape, so ``lenet5`` and ``vgg11_gn``
also run on 8x8 digits; ``cnn_cifar`` and ``cnn_diversefl`` need 32x32-like
inputs (their unpadded convolutions and pools shrink small images to
nothing).

``model.init: zeros`` sets every parameter to 0 (DiverseFL's softmax
regression, "Model parameters are initialized to 0"); otherwise weights
come from :func:`build_model`'s seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from flsec_flower.config import MODELS


def _flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).numel())


def logreg(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Softmax regression: ``softmax(W x + b)``, ``W`` of shape ``(classes, prod(input))``.

    DiverseFL (Prakash & Avestimehr, Section 4.1) trains it on MNIST with
    zero initial parameters (``model.init: zeros``): 784*10 + 10 = 7850
    parameters.
    """
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes))


def mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Two hidden layers of 200 ReLU units: ``in-200-200-classes``.

    DiverseFL, Section 4.2: "a neural network model with two fully connected
    layers, each with 200 neurons" (MNIST: 784*200+200 + 200*200+200 +
    200*10+10 = 199,210 parameters). He, Karimireddy & Jaggi train "an MLP"
    on MNIST without stating its widths; this is the closest stated one.
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(int(np.prod(input_shape)), 200),
        nn.ReLU(),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, num_classes),
    )


def lenet5(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling.

    The second convolution is padded on inputs smaller than 16 pixels so the
    network also runs on 8x8 digits.
    """
    channels, height = input_shape[0], input_shape[1]
    features = nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=0 if height >= 16 else 2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(
        features,
        nn.Linear(_flat_size(features, input_shape), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def cnn_cifar(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Ozdayi & Kantarcioglu's CIFAR-10 CNN: "3 convolutional and 3 fully-connected layers".

    The paper names only the layer counts; the widths are those of the
    authors' public RLR code (Ozdayi et al., AAAI 2021), which the paper
    builds on. On a 3x32x32 input:

    ====  =============================================  ==========
    #     layer                                          output
    ====  =============================================  ==========
    1     conv 3->64, 3x3, no padding, ReLU, max-pool 2  64x15x15
    2     conv 64->128, 3x3, ReLU, max-pool 2            128x6x6
    3     conv 128->256, 3x3, ReLU, max-pool 2           256x2x2
    4     dropout 0.5, dense 1024->128, ReLU             128
    5     dropout 0.5, dense 128->256, ReLU              256
    6     dropout 0.5, dense 256->classes                classes
    ====  =============================================  ==========

    537,610 parameters for 10 classes.
    """
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(
        features,
        nn.Dropout(0.5),
        nn.Linear(_flat_size(features, input_shape), 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 256),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, num_classes),
    )


def cnn_diversefl(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """DiverseFL's smaller CIFAR-10 network (Prakash & Avestimehr, supplementary Table 2).

    ====  ==================================================  ==========
    #     layer                                               output
    ====  ==================================================  ==========
    1     conv 3->16, 3x3, padding 1, ReLU, max-pool 3x3/3    16x10x10
    2     conv 16->64, 4x4, no padding, ReLU, max-pool 4x4/4  64x1x1
    3     dense 64->384, ReLU                                 384
    4     dense 384->192, ReLU                                192
    5     dense 192->classes                                  classes
    ====  ==================================================  ==========

    Biases start at 0 and convolution weights are Glorot-uniform; dense
    weights keep PyTorch's default. 117,706 parameters for 10 classes.
    """
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=3),
        nn.Conv2d(16, 64, 4),
        nn.ReLU(),
        nn.MaxPool2d(4, stride=4),
        nn.Flatten(),
    )
    model = nn.Sequential(
        features,
        nn.Linear(_flat_size(features, input_shape), 384),
        nn.ReLU(),
        nn.Linear(384, 192),
        nn.ReLU(),
        nn.Linear(192, num_classes),
    )
    _diversefl_init(model)
    return model


def _diversefl_init(model: nn.Module) -> None:
    """DiverseFL's init: Glorot-uniform conv weights, zero biases, group-norm weights 1."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight)
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.GroupNorm)) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.GroupNorm):
            nn.init.ones_(module.weight)


def cifar_resnet18(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """ResNet-18 (He et al., 2016) with the CIFAR stem: 3x3 conv, stride 1, no max-pool.

    Bagdasaryan et al. use "the lightweight ResNet18 model with 2.7 million
    parameters"; that count matches no standard ResNet-18 (this one, the
    usual CIFAR variant, has 11.17M for 10 classes), so the standard
    architecture is kept.
    """
    from torchvision.models import resnet18  # ~1 s to import: only for this model

    return _cifar_stem(resnet18(num_classes=num_classes), input_shape[0])


def cifar_resnet50(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """ResNet-50 (He et al., 2016; bottleneck blocks 3-4-6-3) with the CIFAR stem.

    Rance & Svoboda train a ResNet50 on CIFAR-10 without further detail;
    the stem is the CIFAR one of ``resnet18`` (3x3 conv, stride 1, no
    max-pool). 23,520,842 parameters for 10 classes.
    """
    from torchvision.models import resnet50  # ~1 s to import: only for this model

    return _cifar_stem(resnet50(num_classes=num_classes), input_shape[0])


def _cifar_stem(model: nn.Module, channels: int) -> nn.Module:
    model.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


_VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg11_gn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """VGG-11 with group norm, as DiverseFL's supplementary Table 1.

    Eight 3x3 convolutions (stride 1, padding 1) of 64, 128, 256, 256, 512,
    512, 512, 512 channels, each followed by group norm with 16 channels per
    group, ReLU and dropout 0.2; a 2x2/2 max-pool after convolutions 1, 2,
    4, 6 and 8 (VGG-11's "A" configuration, Simonyan & Zisserman, 2015);
    an average pool to 1x1; dense 512->4096->4096->classes, the first two
    followed by ReLU and dropout 0.5. Biases start at 0, group-norm weights
    at 1, convolution weights Glorot-uniform. 28,149,514 parameters for 10
    classes.

    Pooling stops once the feature map is 1x1, so small inputs work too.
    """
    layers: list[nn.Module] = []
    channels, size = input_shape[0], input_shape[1]
    for item in _VGG11:
        if item == "M":
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            continue
        width = int(item)
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(width // 16, width)]
        layers += [nn.ReLU(), nn.Dropout(0.2)]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = nn.Sequential(
        *layers,
        nn.Linear(512, 4096),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(4096, num_classes),
    )
    _diversefl_init(model)
    return model


def adult_mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """103-100-100-1 MLP with one logit, trained with binary cross-entropy.

    Not from a paper: Rance & Svoboda evaluate the fairness attack only with
    a ResNet-50 on CIFAR-10 (``resnet50``); this is the project's model for
    the attack's attribute-group variant on UCI Adult (103 one-hot
    features). 103*100+100 + 100*100+100 + 100+1 = 20,601 parameters.
    """
    if num_classes != 2:
        raise ValueError(f"adult_mlp is a binary classifier; the dataset has {num_classes} classes")
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(int(np.prod(input_shape)), 100),
        nn.ReLU(),
        nn.Linear(100, 100),
        nn.ReLU(),
        nn.Linear(100, 1),
    )


_BUILDERS: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "logreg": logreg,
    "mlp": mlp,
    "lenet5": lenet5,
    "cnn_cifar": cnn_cifar,
    "resnet18": cifar_resnet18,
    "vgg11_gn": vgg11_gn,
    "adult_mlp": adult_mlp,
    "cnn_diversefl": cnn_diversefl,
    "resnet50": cifar_resnet50,
}
assert tuple(_BUILDERS) == MODELS


def model_builders() -> dict[str, Callable[[tuple[int, ...], int], nn.Module]]:
    """Name to builder ``(input_shape, num_classes) -> nn.Module`` of every model."""
    return dict(_BUILDERS)


_IMAGE_MODELS = ("lenet5", "cnn_cifar", "resnet18", "vgg11_gn", "cnn_diversefl", "resnet50")


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int = 0,
    init: str = "default",
) -> nn.Module:
    """Build model ``name`` with weights initialised from ``seed``, or all zero.

    ``init="zeros"`` sets every parameter to 0 (``model.init``).

    Raises
    ------
    ValueError
        If ``name`` is unknown or does not fit the input shape.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    if name in _IMAGE_MODELS and len(input_shape) != 3:
        raise ValueError(f"model {name!r} needs image inputs (C, H, W), got shape {input_shape}")
    if init not in ("default", "zeros"):
        raise ValueError(f"unknown init {init!r}; allowed: 'default', 'zeros'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _BUILDERS[name](tuple(input_shape), num_classes)
    if init == "zeros":
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
    return model


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Return the model's state (parameters and buffers) as NumPy arrays, in order."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    """Load arrays produced by :func:`get_weights` into ``model``."""
    state = model.state_dict()
    if len(weights) != len(state):
        raise ValueError(f"expected {len(state)} arrays, got {len(weights)}")
    new = {}
    for (key, old), arr in zip(state.items(), weights, strict=True):
        if tuple(arr.shape) != tuple(old.shape):
            raise ValueError(f"{key}: got shape {tuple(arr.shape)}, expected {tuple(old.shape)}")
        new[key] = torch.as_tensor(arr, dtype=old.dtype)
    model.load_state_dict(new)
