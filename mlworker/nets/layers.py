"""Small custom layers the builders need, registered so a saved `.keras` file reloads on its own.

Any code that loads a model saved here must `import mlworker.nets` first (that import runs the
registrations below); no `custom_objects` dict is needed.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

# keras.applications' preprocess_input semantics for RGB input in [0, 255]
# (keras/applications/imagenet_utils.py): "torch" scales to [0, 1] and standardises with the
# ImageNet mean/std, "tf" scales to [-1, 1], "caffe" flips RGB to BGR and subtracts the ImageNet
# mean in BGR order without scaling.
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype="float32")
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype="float32")
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype="float32")
PREPROCESS_MODES = ("torch", "tf", "caffe")


def preprocess_numpy(images: np.ndarray, mode: str) -> np.ndarray:
    """The arithmetic of `EncoderPreprocess`, in numpy (float32, channels last)."""
    x = np.asarray(images, dtype="float32")
    if mode == "torch":
        return (x / 255.0 - _TORCH_MEAN) / _TORCH_STD
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "caffe":
        return x[..., ::-1] - _CAFFE_MEAN_BGR
    raise ValueError(f"unknown preprocessing mode {mode!r}; valid: {', '.join(PREPROCESS_MODES)}")


@keras.saving.register_keras_serializable(package="collabmask")
class EncoderPreprocess(keras.layers.Layer):
    """Maps RGB pixels in [0, 255] to what a pretrained encoder was trained on.

    It lives inside the model (rather than in the data pipeline) so that a saved model takes raw
    pixels and cannot be fed twice-normalised or unnormalised inputs by mistake. It has no
    weights, so it never disturbs weight files written for the bare keras.applications encoders.
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(
                f"unknown preprocessing mode {mode!r}; valid: {', '.join(PREPROCESS_MODES)}"
            )
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "torch":
            scale = 1.0 / (255.0 * _TORCH_STD)
            return x * ops.cast(scale, x.dtype) - ops.cast(_TORCH_MEAN / _TORCH_STD, x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        return ops.flip(x, axis=-1) - ops.cast(_CAFFE_MEAN_BGR, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="collabmask")
class ResizeTo(keras.layers.Layer):
    """Bilinear resize of a feature map to a fixed (height, width).

    The decoders use it for every upsampling step and to put encoder feature maps on the
    decoder's grid, so odd input sizes and Inception-v3's valid-padding maps (e.g. 109 or 52 at
    a 224 input) still line up with the skip they are merged with.
    """

    def __init__(self, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.height = int(height)
        self.width = int(width)

    def call(self, inputs):
        resized = ops.image.resize(
            inputs, (self.height, self.width), interpolation="bilinear", antialias=False
        )
        # Some backends return float32 for half-precision input; keep mixed precision intact.
        return ops.cast(resized, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}
