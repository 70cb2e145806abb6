"""Encoders: the paper's four backbones (keras.applications, no top), a slim from-scratch one
for CPU training, and a tiny one for tests.

Every encoder hands the decoders five feature maps, at strides 2, 4, 8, 16 and 32, picked by
layer name. Each is the *last* layer at its stride (the most processed features there), the same
choice the common Keras/PyTorch segmentation libraries make for these backbones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from mlworker.nets.layers import EncoderPreprocess
from mlworker.networks import ENCODER_LABELS, ENCODERS, resolve_name


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    label: str  # how the paper writes it (tables, logs): mlworker.networks.ENCODER_LABELS
    preprocess: str  # keras.applications preprocess_input mode
    min_size: int  # smallest input side the encoder accepts
    skips: tuple[str, ...]  # layer names at strides 2, 4, 8, 16, 32
    feature_layer: str  # last convolutional feature map (Grad-CAM target)
    imagenet_file: str | None  # keras.applications' file name for the no-top ImageNet weights


_INCEPTION_STEM = "@activation"  # "@activationN": the N-th Activation layer (see below)

SPECS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec(
            name="densenet121",
            label=ENCODER_LABELS["densenet121"],
            preprocess="torch",
            min_size=32,
            # conv1 output (s2), then the BN-ReLU that closes dense blocks 1-3 just before each
            # transition conv (s4, s8, s16), then the final BN-ReLU after block 4 (s32).
            skips=("conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu", "relu"),
            feature_layer="relu",
            imagenet_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        EncoderSpec(
            # CheXNet (Rajpurkar et al. 2017) is DenseNet-121 trained on ChestX-ray14: same
            # layers, same preprocessing; only its weights differ.
            name="chexnet",
            label=ENCODER_LABELS["chexnet"],
            preprocess="torch",
            min_size=32,
            skips=("conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu", "relu"),
            feature_layer="relu",
            imagenet_file=None,
        ),
        EncoderSpec(
            name="inceptionv3",
            label=ENCODER_LABELS["inceptionv3"],
            preprocess="tf",
            min_size=75,
            # Inception-v3's stem layers carry no names in keras.applications (they are
            # numbered per session), so the two shallow skips are found by position: the 3rd
            # stem conv-BN-ReLU (stride 2, 109x109 at 224) and the 5th (stride 4, 52x52). The
            # deeper ones are the named mixed blocks that end each stride: mixed2 (25x25),
            # mixed7 (12x12), mixed10 (5x5). All are valid-padded, hence the decoder's alignment.
            skips=(f"{_INCEPTION_STEM}3", f"{_INCEPTION_STEM}5", "mixed2", "mixed7", "mixed10"),
            feature_layer="mixed10",
            imagenet_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        EncoderSpec(
            name="resnet50",
            label=ENCODER_LABELS["resnet50"],
            preprocess="caffe",
            min_size=32,
            # conv1 (s2) and the output of the last residual block of stages 2-5 (s4...s32).
            skips=(
                "conv1_relu",
                "conv2_block3_out",
                "conv3_block4_out",
                "conv4_block6_out",
                "conv5_block3_out",
            ),
            feature_layer="conv5_block3_out",
            imagenet_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        EncoderSpec(
            # A textbook U-Net contracting path for training from scratch on a CPU: per stage a
            # stride-2 3x3 conv-BN-ReLU then a 3x3 conv-BN-ReLU (strided convolutions instead of
            # max-pooling, as nnU-Net does), widths SLIM_WIDTHS unless encoder_widths says
            # otherwise; about 1.2 M parameters and 0.14 GFLOP per 128x128 image by default.
            name="slim",
            label=ENCODER_LABELS["slim"],
            preprocess="tf",
            min_size=32,
            skips=tuple(f"slim_block{i}b_relu" for i in range(1, 6)),
            feature_layer="slim_block5b_relu",
            imagenet_file=None,
        ),
        EncoderSpec(
            # Five stride-2 conv-BN-ReLU blocks, about 4.6k parameters: for fast tests only.
            name="tiny",
            label=ENCODER_LABELS["tiny"],
            preprocess="tf",
            min_size=32,
            skips=tuple(f"tiny_block{i}_relu" for i in range(1, 6)),
            feature_layer="tiny_block5_relu",
            imagenet_file=None,
        ),
    )
}

assert tuple(SPECS) == ENCODERS, "every named encoder has a spec, in the same order"
TINY_WIDTHS = (4, 8, 8, 16, 16)
SLIM_WIDTHS = (16, 32, 64, 128, 256)

_APPLICATIONS = {
    "densenet121": "DenseNet121",
    "chexnet": "DenseNet121",
    "inceptionv3": "InceptionV3",
    "resnet50": "ResNet50",
}


def feature_layer_name(encoder: str) -> str:
    """Name of the last convolutional feature layer of a classifier (or segmenter) on `encoder`.

    Grad-CAM reads this layer's output: `model.get_layer(feature_layer_name("resnet50"))`.
    """
    return SPECS[resolve_name(encoder, ENCODERS, "encoder")].feature_layer


def check_input_shape(input_shape, spec: EncoderSpec) -> tuple[int, int, int]:
    """A fixed (height, width, 3) the encoder accepts, or a ValueError that says why not."""
    shape = tuple(input_shape)
    if len(shape) != 3 or any(not isinstance(d, int) or isinstance(d, bool) for d in shape):
        raise ValueError(
            f"input_shape must be three integers (height, width, 3), got {input_shape!r}; "
            "the decoders align feature maps to fixed sizes, so None is not accepted"
        )
    height, width, channels = shape
    if channels != 3:
        raise ValueError(
            f"input_shape needs 3 channels (greyscale CXRs are replicated to RGB), got {channels}"
        )
    if min(height, width) < spec.min_size:
        raise ValueError(
            f"{spec.label} needs inputs of at least {spec.min_size}x{spec.min_size}, "
            f"got {height}x{width}"
        )
    return shape


def check_encoder_widths(encoder: str, widths) -> tuple[int, ...] | None:
    """Five positive widths for the slim encoder (strides 2..32), None for its default;
    any other encoder has fixed widths and takes None only."""
    if widths is None:
        return None
    if encoder != "slim":
        raise ValueError(
            f"encoder_widths configures the slim encoder; {SPECS[encoder].label} has fixed widths"
        )
    try:
        widths = tuple(widths)
    except TypeError:
        widths = ()
    if len(widths) != 5 or any(
        not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths
    ):
        raise ValueError(
            f"encoder_widths needs five positive integers (strides 2, 4, 8, 16, 32), got {widths!r}"
        )
    return widths


@dataclass
class Encoder:
    spec: EncoderSpec
    features: list  # KerasTensors at strides 2, 4, 8, 16, 32
    output: object  # the last feature map (== features[-1])
    layers: list = field(default_factory=list)  # the encoder's own layers, to freeze
    application: keras.Model | None = None  # the keras.applications model, to load weights into


def build_encoder(
    name: str,
    inputs,
    input_shape: tuple[int, int, int],
    *,
    widths: tuple[int, ...] | None = None,
) -> Encoder:
    """Preprocessing + backbone on `inputs` (raw RGB in [0, 255]); layers end up in the caller's
    graph. `widths` (checked by check_encoder_widths) sets the slim encoder's stage widths."""
    spec = SPECS[name]
    x = EncoderPreprocess(spec.preprocess, name="preprocess")(inputs)
    if name == "tiny":
        return _build_tiny(spec, x)
    if name == "slim":
        return _build_slim(spec, x, widths or SLIM_WIDTHS)
    factory = getattr(keras.applications, _APPLICATIONS[name])
    # Passing our tensor as input_tensor puts the backbone's layers straight into the
    # segmenter/classifier graph (no nested model), so every layer, including the Grad-CAM one,
    # is reachable with model.get_layer(name).
    app = factory(include_top=False, weights=None, input_tensor=x, input_shape=input_shape)
    features = [_find_layer(app, skip).output for skip in spec.skips]
    own = [layer for layer in app.layers if not isinstance(layer, keras.layers.InputLayer)]
    own = [layer for layer in own if not isinstance(layer, EncoderPreprocess)]
    return Encoder(spec, features, app.output, own, app)


def _find_layer(model: keras.Model, name: str) -> keras.layers.Layer:
    if name.startswith(_INCEPTION_STEM):
        index = int(name[len(_INCEPTION_STEM) :])
        activations = [la for la in model.layers if isinstance(la, keras.layers.Activation)]
        return activations[index - 1]
    return model.get_layer(name)


def _build_tiny(spec: EncoderSpec, x) -> Encoder:
    layers, features = [], []
    for i, width in enumerate(TINY_WIDTHS, start=1):
        block = [
            keras.layers.Conv2D(
                width, 3, strides=2, padding="same", use_bias=False, name=f"tiny_block{i}_conv"
            ),
            keras.layers.BatchNormalization(name=f"tiny_block{i}_bn"),
            keras.layers.Activation("relu", name=f"tiny_block{i}_relu"),
        ]
        for layer in block:
            x = layer(x)
        layers += block
        features.append(x)
    return Encoder(spec, features, x, layers, None)


def _build_slim(spec: EncoderSpec, x, widths: tuple[int, ...]) -> Encoder:
    layers, features = [], []
    for i, width in enumerate(widths, start=1):
        block = []
        for part, strides in (("a", 2), ("b", 1)):
            name = f"slim_block{i}{part}"
            block += [
                keras.layers.Conv2D(
                    width, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
                ),
                keras.layers.BatchNormalization(name=f"{name}_bn"),
                keras.layers.Activation("relu", name=f"{name}_relu"),
            ]
        for layer in block:
            x = layer(x)
        layers += block
        features.append(x)
    return Encoder(spec, features, x, layers, None)


def freeze(encoder: Encoder) -> None:
    """Make the encoder's layers non-trainable; Keras then also runs its BatchNorms in inference mode."""
    for layer in encoder.layers:
        layer.trainable = False
