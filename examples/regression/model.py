"""A deterministic regression model, as it might stand in a code base today.

`bayesify rewrite` turns it into a Bayesian Pyro model; see ../run.py.
"""
import torch
import torch.nn as nn


class Linear(nn.Module):
    def __init__(self, in_size, out_size):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_size, out_size))
        self.bias = nn.Parameter(torch.randn(out_size))

    def forward(self, input_):
        return self.bias + input_ @ self.weight


class Regressor(nn.Module):
    """A linear layer with a learned output scale."""

    def __init__(self, in_size, out_size):
        super().__init__()
        self.linear = Linear(in_size, out_size)
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, input_):
        return self.linear(input_)

    def scale(self):
        return self.log_scale.exp()
