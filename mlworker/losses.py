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


@keras.saving.register_keras_serializable(package="collabmask")
class HybridLoss(keras.losses.Loss):
    """Class-balanced focal loss (mean over pixels) + Dice loss, summed.

    Expects `y_true` in {0, 1} and `y_pred` probabilities (sigmoid outputs), both shaped
    (batch, H, W, 1).
    """

    def __init__(
        self,
        alpha: float = FOCAL_ALPHA,
        gamma: float = FOCAL_GAMMA,
        per_image: bool = False,
        name: str = "hybrid_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.per_image = bool(per_image)
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
        return focal + dice

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"alpha": self.alpha, "gamma": self.gamma, "per_image": self.per_image})
        return config
