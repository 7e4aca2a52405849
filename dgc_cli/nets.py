"""Networks from a small declarative spec, so the paper's architectures are configs, not forks.

An MLP spec is ``{"type": "mlp", "widths": [500, 500, 2000], "activation": "relu"}``; a plain
tuple of widths is shorthand for it. An image encoder is a conv stack followed by dense layers::

    {"type": "conv", "activation": "relu", "batchnorm": True,
     "layers": [{"out": 48, "kernel": 5, "pool": 2, "pool_stride": 2}, ...],
     "dense": [3072, 256]}

and an image decoder is the mirror, a dense layer reshaped to a 1x1 map and a stack of transposed
convolutions (``{"type": "deconv", "dense": [3072], "layers": [{"out": 256, "kernel": 4,
"stride": 1, "padding": 0}, ...]}``). Specs are plain JSON so a saved model can rebuild its nets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "elu": nn.ELU,
               "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}


def as_spec(spec, activation: str = "relu") -> dict:
    """Normalise a spec: a sequence of ints is an MLP with the given activation."""
    if spec is None:
        return {"type": "mlp", "widths": [], "activation": activation}
    if isinstance(spec, dict):
        out = dict(spec)
        out.setdefault("activation", activation)
        return out
    if isinstance(spec, Sequence) and all(isinstance(w, int) for w in spec):
        return {"type": "mlp", "widths": list(spec), "activation": activation}
    raise ValueError(f"network spec must be a list of widths or a dict, got {spec!r}")


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(in_dim: int, widths: Sequence[int], activation: str) -> tuple[nn.Sequential, int]:
    """Fully connected layers, each followed by the activation; returns (net, out_dim)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_dim, width), _activation(activation)]
        in_dim = width
    return nn.Sequential(*layers), in_dim


class _SamePool(nn.Module):
    """Max-pool with stride 1 that keeps the map size (TF 'same' padding), as in B.3's MaxPool(2, 1)."""

    def __init__(self, kernel: int):
        super().__init__()
        self.pad = nn.ZeroPad2d((0, kernel - 1, 0, kernel - 1))
        self.pool = nn.MaxPool2d(kernel, stride=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.pool(self.pad(h))


def conv_encoder(in_shape: Sequence[int], spec: dict) -> tuple[nn.Sequential, int]:
    """Conv stack (conv, batchnorm, activation, pool) then dense layers; returns (net, out_dim)."""
    channels = in_shape[0]
    layers: list[nn.Module] = []
    for layer in spec["layers"]:
        kernel = layer.get("kernel", 5)
        layers.append(nn.Conv2d(channels, layer["out"], kernel, padding=kernel // 2))
        if spec.get("batchnorm", True):
            layers.append(nn.BatchNorm2d(layer["out"]))
        layers.append(_activation(spec["activation"]))
        pool, stride = layer.get("pool", 0), layer.get("pool_stride", layer.get("pool", 0))
        if pool:
            layers.append(_SamePool(pool) if stride == 1 else nn.MaxPool2d(pool, stride=stride))
        channels = layer["out"]
    layers.append(nn.Flatten())
    body = nn.Sequential(*layers)
    with torch.no_grad():  # the flattened size follows from the input shape, not from the paper's table
        flat = body(torch.zeros(1, *in_shape)).shape[1]
    dense, out_dim = mlp(flat, spec.get("dense", []), spec["activation"])
    return nn.Sequential(body, dense), out_dim


class _Reshape(nn.Module):
    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.reshape(h.shape[0], *self.shape)


def deconv_decoder(latent_dim: int, out_shape: Sequence[int], spec: dict) -> nn.Sequential:
    """Dense layers to a 1x1 map, transposed convolutions up to ``out_shape``; outputs logits."""
    dense, width = mlp(latent_dim, spec.get("dense", []), spec["activation"])
    layers: list[nn.Module] = [dense, _Reshape((width, 1, 1))]
    channels = width
    for i, layer in enumerate(spec["layers"]):
        last = i == len(spec["layers"]) - 1
        layers.append(nn.ConvTranspose2d(channels, layer["out"], layer.get("kernel", 4),
                                         stride=layer.get("stride", 2),
                                         padding=layer.get("padding", 1)))
        if not last:
            if spec.get("batchnorm", True):
                layers.append(nn.BatchNorm2d(layer["out"]))
            layers.append(_activation(spec["activation"]))
        channels = layer["out"]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        got = tuple(net(torch.zeros(1, latent_dim)).shape[1:])
    if got != tuple(out_shape):
        raise ValueError(f"decoder spec produces images of shape {got}, data has {tuple(out_shape)}")
    return net


def build_encoder(x_shape: Sequence[int], spec: dict) -> tuple[nn.Module, int]:
    """Encoder trunk h(x) for a spec; returns (net, feature_dim) before the mu~/sigma~ layers."""
    if spec["type"] == "conv":
        return conv_encoder(x_shape, spec)
    return mlp(math.prod(x_shape), spec.get("widths", []), spec["activation"])


def build_decoder(latent_dim: int, x_shape: Sequence[int], spec: dict) -> nn.Module:
    """Decoder from z to the parameters (means or logits) of p(x|z), shaped like x."""
    if spec["type"] == "deconv":
        return deconv_decoder(latent_dim, x_shape, spec)
    trunk, width = mlp(latent_dim, spec.get("widths", []), spec["activation"])
    return nn.Sequential(trunk, nn.Linear(width, math.prod(x_shape)), _Reshape(x_shape))
