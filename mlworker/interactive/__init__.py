"""Click-to-refine: an interactive segmentation network trained on the loop's accepted masks.

When no candidate mask is good, a reader clicks: positive where infection is missing,
negative where the mask is wrong, optionally ticking lung zones; the network returns the
refined mask from the radiograph, the current mask and the clicks.

- clicks: click and zone encoding (`click_maps`, `zone_map`, `interactive_input`) and the
  simulated reader (`next_click`); numpy only.
- session: simulated sessions (`simulate_session`) and NoC@85 / NoC@90 (`noc`); numpy only.
- model: `build_interactive`, and `refine` / `refine_probabilities`, the predict path a
  server uses (Keras).
- training: `train_interactive` with DeepEdit-style simulated clicks (Keras).

    from mlworker.interactive.model import refine
    mask = refine(model, image, current_mask, [(120, 64, "positive")], ["left_lower"])
"""

from mlworker.interactive.clicks import (
    ZONES,
    Click,
    click_maps,
    interactive_input,
    next_click,
    zone_map,
    zones_of,
)
from mlworker.interactive.session import NOC_CAP, SessionResult, noc, simulate_session

__all__ = [
    "NOC_CAP",
    "ZONES",
    "Click",
    "SessionResult",
    "click_maps",
    "interactive_input",
    "next_click",
    "noc",
    "simulate_session",
    "zone_map",
    "zones_of",
]
