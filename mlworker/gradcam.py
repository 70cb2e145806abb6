"""Grad-CAM for the COVID-19 classifiers, to set beside the infection maps.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization" (ICCV 2017), section 3:
  eq. 1  α_k^c = (1/Z) Σ_i Σ_j ∂y^c / ∂A^k_ij   (global-average-pooled gradients)
  eq. 2  L^c   = ReLU(Σ_k α_k^c A^k)
where A^k are the feature maps of a convolutional layer and y^c the score of class c
*before the softmax*. Degerli et al. 2021 compare such maps of classifiers built on the
same encoders (GAP + 2-unit softmax) with their infection maps.

The class score: when the model ends in a softmax (a Dense layer with softmax
activation, or a Softmax/Activation("softmax") layer), y^c is the logit, recomputed
from the last layer's input. Otherwise the model's output for class c is used as is.

Gradients need each backend's own autodiff; `_gradients` is the only backend-specific
code and refuses other backends with NotImplementedError.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from mlworker.maps import resize_probability

SUPPORTED_BACKENDS = ("tensorflow", "torch", "jax")


def _gradients(score_fn: Callable, features: np.ndarray) -> np.ndarray:
    """∂(Σ_batch y^c)/∂A for a batch of feature maps A, as numpy.

    Each image's score depends on its own features only (inference mode), so the
    gradient of the batch sum is every image's own gradient.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensor = tf.convert_to_tensor(features)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            total = tf.reduce_sum(score_fn(tensor))
        return tape.gradient(total, tensor).numpy()
    if backend == "torch":
        import torch

        tensor = keras.ops.convert_to_tensor(features).detach().requires_grad_(True)
        with torch.enable_grad():
            total = torch.sum(score_fn(tensor))
            (grads,) = torch.autograd.grad(total, tensor)
        return grads.detach().cpu().numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        return np.asarray(jax.grad(lambda a: jnp.sum(score_fn(a)))(jnp.asarray(features)))
    raise NotImplementedError(
        f"Grad-CAM needs gradients and is not implemented for the {backend!r} Keras backend; "
        f"run it with KERAS_BACKEND set to one of {', '.join(SUPPORTED_BACKENDS)}"
    )


def _node_tensors(layer: keras.layers.Layer, model: keras.Model, kind: str) -> list:
    """The symbolic input/output tensors of `layer` inside `model`'s graph.

    `layer.output` of a nested functional model (an encoder used as one layer) names
    the nested graph's own tensor; the call node holds the one in the outer graph.
    """
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise ValueError(f"layer {layer.name!r} is used {len(nodes)} times in {model.name!r}")
    return list(nodes[0].output_tensors if kind == "output" else nodes[0].input_tensors)


def _feature_layer(model: keras.Model, layer_name: str | None) -> keras.layers.Layer:
    candidates = [
        layer
        for layer in model.layers
        if len(layer.output.shape) == 4 and not isinstance(layer, keras.layers.InputLayer)
    ]
    if layer_name is None:
        if not candidates:
            raise ValueError(f"model {model.name!r} has no layer with 4-D (feature map) output")
        return candidates[-1]  # the last convolutional feature maps, as Selvaraju et al.
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        names = ", ".join(layer.name for layer in candidates) or "none"
        raise ValueError(
            f"model {model.name!r} has no top-level layer {layer_name!r}; "
            f"layers with feature-map output: {names}"
        ) from None
    if layer not in candidates:
        raise ValueError(f"layer {layer_name!r} does not output 4-D feature maps")
    return layer


def _score_head(model: keras.Model, features) -> Callable:
    """A function from feature maps A to the per-image class-score vector (logits if any)."""
    last = model.layers[-1]
    dense_softmax = (
        isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax
    )
    softmax_layer = isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and last.activation is keras.activations.softmax
    )
    target = _node_tensors(last, model, "input")[0] if dense_softmax or softmax_layer else None
    try:
        head = keras.Model(features, target if target is not None else model.outputs[0])
    except ValueError as error:
        raise ValueError(
            "the chosen feature layer does not separate the network (the classifier head "
            f"also reads earlier tensors); pick a later layer ({error})"
        ) from None

    if dense_softmax:

        def logits(a):
            z = keras.ops.matmul(head(a, training=False), last.kernel)  # logits before softmax
            return z + last.bias if last.bias is not None else z

        return logits
    return lambda a: head(a, training=False)


def gradcam(
    model: keras.Model,
    images: np.ndarray,
    *,
    layer_name: str | None = None,
    class_index: int = 1,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM heatmaps of class `class_index` (1 = COVID-19), shape (N, H, W), in [0, 1].

    images: (N, H, W, C) already preprocessed as the model expects (channels last).
    layer_name: a top-level layer with 4-D output (a nested encoder counts as one
    layer); default the last such layer. Each map is upsampled bilinearly to the input
    size and divided by its maximum; a map with no positive evidence is all zeros.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C) (got shape {images.shape})")
    if keras.config.image_data_format() != "channels_last":
        raise ValueError("Grad-CAM expects channels_last feature maps")
    outputs = model.outputs[0].shape
    if len(outputs) != 2 or not 0 <= class_index < outputs[-1]:
        raise ValueError(f"class_index {class_index} is not a class of output shape {outputs}")
    layer = _feature_layer(model, layer_name)
    features_tensor = _node_tensors(layer, model, "output")[0]
    if len(model.inputs) != 1:
        raise ValueError(f"Grad-CAM needs a single-input model (got {len(model.inputs)} inputs)")
    feature_model = keras.Model(model.inputs[0], features_tensor)
    score_fn = _score_head(model, features_tensor)

    def class_score(a):
        return score_fn(a)[:, class_index]

    height, width = images.shape[1:3]
    heatmaps = np.zeros((len(images), height, width), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        features = keras.ops.convert_to_numpy(feature_model(batch, training=False))
        grads = _gradients(class_score, features)
        weights = grads.mean(axis=(1, 2))  # Selvaraju eq. 1: α_k = GAP of ∂y^c/∂A^k
        # Selvaraju eq. 2: L = ReLU(Σ_k α_k A^k).
        cams = np.maximum(np.einsum("nhwk,nk->nhw", features, weights), 0.0)
        for offset, cam in enumerate(cams):
            heatmaps[start + offset] = _upsample(cam, (height, width))
    return heatmaps


def _upsample(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    peak = float(cam.max())
    if peak <= 0.0:
        return np.zeros(shape, dtype=np.float32)
    resized = resize_probability((cam / peak).astype(np.float32), shape)  # bilinear
    return resized / max(float(resized.max()), np.finfo(np.float32).tiny)
