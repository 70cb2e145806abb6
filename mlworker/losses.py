"""The hybrid segmentation loss of the QaTa-COV19 study: focal loss + Dice loss.

The paper writes, per pixel i with label y_i and predicted probability p_i:

    FL   = -α_t (1 - p_t)^γ log(p_t),  p_t = p if y = 1 else 1 - p,
                                       α_t = α if y = 1 else 1 - α   (α = 0.25, γ = 2)
    Dice = 1 - (2 Σ y p + ε) / (Σ y + Σ p + ε)
    loss = FL + Dice

How the Keras building blocks map onto it:

- `keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25, gamma=2)`
  computes exactly FL per pixel (log clipped at 1e-7), averaged over the channel axis;
  we then average over all pixels and images, so the focal term is the mean per-pixel FL.
- `keras.losses.Dice` sums over the axes it is given. With `axis=None` (our default,
  `per_image=False`) the sums run over every pixel of every image in the batch ("batch
  Dice"): a control image with an empty mask still adds its false-positive probability
  to the denominator, so it is pushed towards an empty prediction. With `per_image=True`
  the sums run per image and the per-image losses are averaged; an image with an empty
  mask then always scores Dice loss 1 whatever the prediction (no gradient), because
  Keras puts ε only in the denominator.
- Optionally (`lovasz`, a weight; 0 by default, the paper's loss) a third term, the Lovász
  extension of the Jaccard loss (Berman et al., CVPR 2018) on the per-pixel errors |y - p|
  of the infection class: the errors sorted in decreasing order, dotted with the Jaccard
  loss's increments along that order. It is the tight convex surrogate of 1 - IoU, so it
  optimises the overlap measure the study reports rather than a smooth stand-in for it;
  like Dice it runs over the whole batch, or per image with `per_image=True`.
- The ε placement differs from the paper: Keras computes 1 - 2 Σ y p / (Σ y + Σ p + ε)
  with ε = 1e-7. The two agree to ~1e-7 except when both Σ y and Σ p are zero, where the
  paper's form gives 0 and Keras' gives 1 — a constant that carries no gradient.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def check_lovasz(weight: float) -> None:
    if not (isinstance(weight, int | float) and 0 <= weight < float("inf")):
        raise ValueError(f"the Lovász weight must be a finite number >= 0, not {weight!r}")


def lovasz_jaccard(y_true, y_pred, *, per_image: bool = False):
    """The Lovász extension of the Jaccard loss of the foreground class, on probabilities:
    one value for the batch (shape ()), or one per image with `per_image` (shape (batch,)).

    An image (or batch) without foreground scores its largest error: the Jaccard loss of
    an empty truth is 1 as soon as one pixel is predicted."""
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    y_true = ops.cast(y_true, "float32")
    rows = ops.shape(y_pred)[0] if per_image else 1
    truth = ops.reshape(y_true, (rows, -1))
    errors = ops.abs(truth - ops.reshape(y_pred, (rows, -1)))
    order = ops.argsort(-errors, axis=-1)  # decreasing errors
    errors = ops.take_along_axis(errors, order, axis=-1)
    truth = ops.take_along_axis(truth, order, axis=-1)
    positives = ops.sum(truth, axis=-1, keepdims=True)
    intersection = positives - ops.cumsum(truth, axis=-1)
    union = positives + ops.cumsum(1.0 - truth, axis=-1)
    jaccard = 1.0 - intersection / union
    increments = ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=-1)
    losses = ops.sum(errors * ops.stop_gradient(increments), axis=-1)
    return losses if per_image else losses[0]


@keras.saving.register_keras_serializable(package="collabmask")
class HybridLoss(keras.losses.Loss):
    """Class-balanced focal loss (mean over pixels) + Dice loss, summed; with `lovasz` > 0,
    plus that weight times the Lovász-Jaccard loss (lovasz_jaccard).

    Expects `y_true` in {0, 1} and `y_pred` probabilities (sigmoid outputs), both shaped
    (batch, H, W, 1).
    """

    def __init__(
        self,
        alpha: float = FOCAL_ALPHA,
        gamma: float = FOCAL_GAMMA,
        per_image: bool = False,
        lovasz: float = 0.0,
        name: str = "hybrid_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.per_image = bool(per_image)
        check_lovasz(lovasz)
        self.lovasz = float(lovasz)
        # reduction=None: both return unreduced values we combine per image below.
        self._focal = keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True, alpha=self.alpha, gamma=self.gamma, reduction=None
        )
        self._dice = keras.losses.Dice(reduction=None, axis=(1, 2, 3) if self.per_image else None)

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        if len(y_pred.shape) != 4:
            raise ValueError(
                f"HybridLoss expects (batch, H, W, 1) tensors, got y_pred shape {y_pred.shape}"
            )
        # Focal: per pixel (channel axis already averaged), then per image.
        focal = ops.mean(self._focal(y_true, y_pred), axis=(1, 2))
        # Dice: one scalar for the batch, or one value per image; broadcast so the
        # per-image mean taken by the reduction leaves focal mean + Dice.
        dice = self._dice(y_true, y_pred)
        if not self.lovasz:
            return focal + dice
        lovasz = lovasz_jaccard(y_true, y_pred, per_image=self.per_image)
        return focal + dice + self.lovasz * ops.cast(lovasz, focal.dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "alpha": self.alpha,
                "gamma": self.gamma,
                "per_image": self.per_image,
                "lovasz": self.lovasz,
            }
        )
        return config
