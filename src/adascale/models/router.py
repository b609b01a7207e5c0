"""A router's learnable part as a saved model kind: the standardised MLP plus what it was trained for.

The array logic (which feature blocks, which pool, how outputs become scales) lives in
:mod:`adascale.scales.routers`, above this layer; here ``routing`` is only carried as JSON so
that a router directory uses the one model format (:mod:`adascale.models.io`).
"""

from __future__ import annotations

from collections.abc import Sequence

from adascale.nn.mlp import RouterNet


class RouterModel(RouterNet):
    """(N, n_inputs) features -> (N, n_outputs) raw outputs; ``routing`` the JSON settings that interpret them."""

    kind = "router"

    def __init__(self, n_inputs: int, n_outputs: int, hidden: Sequence[int] = (64, 64), routing: dict | None = None) -> None:
        super().__init__(n_inputs, n_outputs, hidden)
        self.n_inputs, self.n_outputs, self.hidden = int(n_inputs), int(n_outputs), [int(h) for h in hidden]
        self.routing = dict(routing or {})

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "n_inputs": self.n_inputs,
            "n_outputs": self.n_outputs,
            "hidden": self.hidden,
            "routing": self.routing,
        }

    @classmethod
    def from_config(cls, settings: dict, build) -> RouterModel:
        return cls(**settings)
