"""How a simulated MD chooses among the candidates on screen.

The reader is given a quality per option (the Dice of each candidate against a hidden true
mask, say), sees each through some noise, and picks the best it sees: near-equal masks get
confused, clearly worse ones rarely. It rejects all and draws when even the best is poor, and
now and then anyway (`draw_rate`)."""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TypeVar

Option = TypeVar("Option", bound=Hashable)

NOISE = 0.05  # spread of the quality the reader perceives around the true one
DRAW_BELOW = 0.35  # best quality under which the reader rejects all and draws


@dataclass
class SimulatedReader:
    rng: random.Random
    noise: float = NOISE
    draw_below: float = DRAW_BELOW
    draw_rate: float = 0.0

    def choose(self, quality: dict[Option, float]) -> Option | None:
        """The option the reader picks, or None when it rejects all to draw its own."""
        if self.rng.random() < self.draw_rate or max(quality.values()) < self.draw_below:
            return None
        seen = {option: q + self.rng.gauss(0.0, self.noise) for option, q in quality.items()}
        return max(sorted(seen), key=seen.get)
