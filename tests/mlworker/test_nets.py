"""Network builders: every arch x encoder builds, trains a step, saves and reloads; weights load."""

from __future__ import annotations

import io

import h5py
import keras
import numpy as np
import pytest

from mlworker.nets import (
    CHEXNET_FILE,
    build_classifier,
    build_segmenter,
    count_params,
    feature_layer_name,
    param_table,
    preprocess_input,
)
from mlworker.networks import ARCHS, PAPER_ENCODERS

pytestmark = [
    pytest.mark.keras,
    # Keras' own variable-to-numpy conversions trip NumPy 2's copy-keyword deprecation.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning"),
]

SMALL = (16, 16, 8, 8, 8)  # decoder widths that keep tiny-encoder tests fast
# The smallest input each encoder takes sensibly (Inception-v3 refuses anything under 75).
MIN_SIDE = {
    "densenet121": 64,
    "chexnet": 64,
    "resnet50": 64,
    "inceptionv3": 75,
    "slim": 64,
    "tiny": 64,
}
APPLICATION_PREPROCESS = {
    "densenet121": keras.applications.densenet.preprocess_input,
    "chexnet": keras.applications.densenet.preprocess_input,
    "inceptionv3": keras.applications.inception_v3.preprocess_input,
    "resnet50": keras.applications.resnet50.preprocess_input,
}


def _images(size, batch=1, seed=0):
    h, w = (size, size) if isinstance(size, int) else size
    return np.random.default_rng(seed).uniform(0, 255, (batch, h, w, 3)).astype("float32")


def _masks(size, batch=1, seed=1):
    h, w = (size, size) if isinstance(size, int) else size
    return (np.random.default_rng(seed).uniform(size=(batch, h, w, 1)) > 0.7).astype("float32")


def _first(model, kind):
    return next(layer for layer in model.layers if isinstance(layer, kind))


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _train_save_reload(model, x, y, tmp_path, loss="binary_crossentropy", eager=True):
    """One Adam step, then a .keras round trip; returns (weights before, reloaded model).

    Eager by default: tracing a TensorFlow train step costs 10-20 s even for the tiny networks,
    so only one test pays for the graph-mode path.
    """
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, run_eagerly=eager)
    before = {id(v): np.array(v.numpy()) for v in model.weights}
    loss_value = float(np.asarray(model.train_on_batch(x, y)).reshape(-1)[0])
    assert np.isfinite(loss_value)
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)  # no custom_objects: layers are registered
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-5
    )
    assert count_params(reloaded) == count_params(model)
    return before, reloaded


def _changed(before, variable):
    return not np.array_equal(before[id(variable)], variable.numpy())


@pytest.fixture(autouse=True)
def _fresh_session():
    yield
    keras.backend.clear_session()  # also collects garbage


# -- names and arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "name"), [("U-Net", "unet"), ("UNet++", "unetpp"), ("DLA", "dla")]
)
def test_it_accepts_common_arch_spellings(arch, name):
    assert build_segmenter(arch, "Tiny", input_shape=(32, 32, 3)).name == f"{name}_tiny"


@pytest.mark.parametrize(
    ("spelling", "encoder"),
    [
        ("DenseNet-121", "densenet121"),
        ("CheXNet", "chexnet"),
        ("Inception-v3", "inceptionv3"),
        ("InceptionV3", "inceptionv3"),
        ("ResNet-50", "resnet50"),
        ("resnet_50", "resnet50"),
        ("Slim", "slim"),
    ],
)
def test_it_accepts_common_encoder_spellings(spelling, encoder):
    assert feature_layer_name(spelling) == feature_layer_name(encoder)
    x = _images(8)
    np.testing.assert_array_equal(preprocess_input(x, spelling), preprocess_input(x, encoder))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"arch": "segnet"}, ValueError, "valid: unet, unetpp, dla"),
        ({"encoder": "vgg16"}, ValueError, "valid: densenet121, chexnet, inceptionv3"),
        ({"input_shape": (None, None, 3)}, ValueError, "three integers"),
        ({"input_shape": (64, 64, 1)}, ValueError, "3 channels"),
        ({"encoder": "inceptionv3", "input_shape": (64, 64, 3)}, ValueError, "at least 75x75"),
        ({"decoder_widths": (32, 16)}, ValueError, "five positive integers"),
        ({"arch": "unet", "deep_supervision": True}, ValueError, r"UNet\+\+ option"),
        ({"encoder_weights": "imagenet"}, ValueError, "no pretrained weights"),
        ({"encoder_weights": 3}, ValueError, "no pretrained weights"),
        (
            {"encoder": "chexnet", "encoder_weights": "imagenet"},
            ValueError,
            "encoder='densenet121'",
        ),
        (
            {"encoder": "resnet50", "encoder_weights": "chexnet"},
            ValueError,
            "fit encoder 'chexnet'",
        ),
        ({"encoder": "resnet50", "encoder_weights": 3}, TypeError, "or a file path"),
        ({"encoder": "slim", "encoder_weights": "imagenet"}, ValueError, "slim encoder has no"),
        ({"encoder_widths": (8, 16, 32, 64, 128)}, ValueError, "Tiny has fixed widths"),
        ({"encoder": "slim", "encoder_widths": (8, 16)}, ValueError, "five positive integers"),
        ({"encoder": "slim", "encoder_widths": (8, 0, 8, 8, 8)}, ValueError, "five positive"),
        ({"encoder": "slim", "encoder_widths": 8}, ValueError, "five positive integers"),
    ],
)
def test_it_rejects_bad_arguments_clearly(kwargs, error, message):
    args = {"arch": "unet", "encoder": "tiny", "input_shape": (64, 64, 3), **kwargs}
    with pytest.raises(error, match=message):
        build_segmenter(args.pop("arch"), args.pop("encoder"), **args)


# -- the tiny encoder: fast checks of what every network must do -------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_network_trains_saves_and_reloads(arch, tmp_path):
    model = build_segmenter(arch, "tiny", input_shape=(64, 64, 3), decoder_widths=SMALL)
    x, y = _images(64, batch=2), _masks(64, batch=2)
    out = keras.ops.convert_to_numpy(model(x))
    assert out.shape == (2, 64, 64, 1) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    trainable, non_trainable = count_params(model)
    assert trainable < 60_000 and non_trainable < 1_000  # milliseconds per step on a CPU
    before, _ = _train_save_reload(model, x, y, tmp_path, eager=arch != "unet")
    assert all(_changed(before, v) for v in model.trainable_weights if "kernel" in v.path)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [(32, 32), (33, 50), (97, 64), (130, 75)])
def test_output_is_at_input_resolution_for_any_size(arch, size):
    model = build_segmenter(arch, "tiny", input_shape=(*size, 3), decoder_widths=SMALL)
    assert tuple(keras.ops.convert_to_numpy(model(_images(size))).shape) == (1, *size, 1)


def test_frozen_encoder_keeps_its_weights_and_batchnorm_statistics(tmp_path):
    model = build_segmenter(
        "unet", "tiny", input_shape=(64, 64, 3), decoder_widths=SMALL, frozen=True
    )
    free = build_segmenter("unet", "tiny", input_shape=(64, 64, 3), decoder_widths=SMALL)
    (t_frozen, n_frozen), (t_free, n_free) = count_params(model), count_params(free)
    assert t_frozen + n_frozen == t_free + n_free
    # 5 convs (9 * (3*4 + 4*8 + 8*8 + 8*16 + 16*16) = 4428) + BN gamma/beta (2 * 52) = 4532.
    assert t_free - t_frozen == n_frozen - n_free == 4532
    before, reloaded = _train_save_reload(model, _images(64, 2), _masks(64, 2), tmp_path)
    encoder = [model.get_layer(f"tiny_block{i}_{k}") for i in range(1, 6) for k in ("conv", "bn")]
    assert not any(_changed(before, v) for layer in encoder for v in layer.weights)
    assert _changed(before, model.get_layer("mask_logits").kernel)
    assert not reloaded.get_layer("tiny_block1_conv").trainable


def test_unetpp_nodes_merge_every_earlier_node_of_their_row():
    model = build_segmenter("unetpp", "tiny", input_shape=(64, 64, 3), decoder_widths=SMALL)
    nodes = [layer for layer in model.layers if layer.name.endswith("_concat")]
    assert len(nodes) == 10  # X(i,j) for j >= 1, i + j <= 4
    # X(0,4) reads X(0,0..3) and the upsampled X(1,3): five inputs at stride 2.
    x04 = model.get_layer("dec_x04_concat")
    assert len(x04.input) == 5 and {tuple(t.shape[1:3]) for t in x04.input} == {(32, 32)}


def test_unetpp_deep_supervision_gives_four_full_size_masks():
    model = build_segmenter(
        "unetpp", "tiny", input_shape=(64, 64, 3), decoder_widths=SMALL, deep_supervision=True
    )
    outputs = model(_images(64))
    assert [tuple(o.shape) for o in outputs] == [(1, 64, 64, 1)] * 4
    assert model.output_names[-1] == "mask"


def test_dla_aggregates_iteratively_from_the_deepest_stage():
    model = build_segmenter("dla", "tiny", input_shape=(64, 64, 3), decoder_widths=SMALL)
    nodes = [layer for layer in model.layers if layer.name.endswith("_concat")]
    # Steps land at strides 16, 8, 4, 2 with 1, 2, 3, 4 aggregation nodes.
    assert len(nodes) == 10 and all(len(node.input) == 2 for node in nodes)
    sides = [model.get_layer(f"dec_ida{s}_node1_concat").input[0].shape[1] for s in range(4)]
    assert sides == [4, 8, 16, 32]


def test_output_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_segmenter("dla", "tiny", input_shape=(32, 32, 3), decoder_widths=SMALL)
        assert model.get_layer("mask_logits").compute_dtype == "float16"
        out = keras.ops.convert_to_numpy(model(_images(32)))
        assert out.dtype == np.float32 and out.shape == (1, 32, 32, 1)
        # (Training steps in float16 need a GPU: PyTorch has no half-precision conv backward on CPU.)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_param_table_reports_every_pair_trainable_and_frozen():
    out = io.StringIO()
    rows = param_table(encoders=["tiny"], input_shape=(64, 64, 3), file=out)
    assert [(r["arch"], r["encoder"]) for r in rows] == [(a, "tiny") for a in ARCHS]
    text = out.getvalue()
    for row in rows:
        built = build_segmenter(row["arch"], "tiny", input_shape=(64, 64, 3))
        assert row["trainable_encoder"] == count_params(built)
        assert sum(row["frozen"]) == sum(row["trainable_encoder"])
        assert f"{row['trainable_encoder'][0]:,}" in text and f"{row['frozen'][1]:,}" in text
    assert text.count("Tiny") == 3 and {"U-Net", "UNet++", "DLA"} <= set(text.split())


# -- the paper's twelve networks ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("encoder", PAPER_ENCODERS)
@pytest.mark.parametrize("arch", ARCHS)
def test_paper_network_trains_saves_and_reloads(arch, encoder, tmp_path):
    # Each encoder trains once whole (U-Net) and twice frozen (UNet++, DLA): frozen saves carry
    # no optimizer state for the encoder, which keeps the .keras files and the test short.
    frozen = arch != "unet"
    side = MIN_SIDE[encoder]
    model = build_segmenter(arch, encoder, input_shape=(side, side, 3), frozen=frozen)
    x, y = _images(side), _masks(side)
    assert tuple(model.output.shape) == (None, side, side, 1)

    # The model normalises raw pixels itself, exactly like keras.applications.
    seen = keras.Model(model.input, model.get_layer("preprocess").output)(x)
    expected = APPLICATION_PREPROCESS[encoder](x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(seen), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(preprocess_input(x, encoder), expected, rtol=1e-5, atol=1e-4)

    before, _ = _train_save_reload(model, x, y, tmp_path)
    encoder_conv, encoder_bn = (
        _first(model, keras.layers.Conv2D),
        _first(model, keras.layers.BatchNormalization),
    )
    assert _changed(before, model.get_layer("mask_logits").kernel)
    assert _changed(before, encoder_conv.kernel) is not frozen
    assert _changed(before, encoder_bn.moving_mean) is not frozen


@pytest.mark.slow
@pytest.mark.parametrize(
    ("encoder", "sizes"),
    [
        ("densenet121", [(96, 96), (100, 72)]),
        ("resnet50", [(128, 128), (90, 131)]),
        ("inceptionv3", [(96, 96), (100, 131), (224, 224)]),
    ],
)
def test_paper_encoders_give_input_resolution_at_several_sizes(encoder, sizes):
    for size in sizes:
        model = build_segmenter("unet", encoder, input_shape=(*size, 3), decoder_widths=SMALL)
        assert tuple(model(_images(size)).shape) == (1, *size, 1), size


# -- classifiers and their Grad-CAM layer --------------------------------------------------------


@pytest.mark.parametrize("encoder", [*PAPER_ENCODERS, "slim", "tiny"])
def test_classifier_pools_the_named_feature_layer(encoder, tmp_path):
    side = MIN_SIDE[encoder]
    model = build_classifier(encoder, input_shape=(side, side, 3))
    x = _images(side)
    probe = keras.Model(
        model.input,
        [model.get_layer(feature_layer_name(encoder)).output, model.get_layer("logits").output],
    )
    features, logits = (keras.ops.convert_to_numpy(t) for t in probe(x))
    dense = model.get_layer("logits")
    kernel, bias = dense.kernel.numpy(), dense.bias.numpy()
    # The class scores are exactly the pooled feature layer through the Dense head.
    np.testing.assert_allclose(features.mean(axis=(1, 2)) @ kernel + bias, logits, atol=1e-4)
    probabilities = keras.ops.convert_to_numpy(model(x))
    assert probabilities.shape == (1, 2) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(), 1.0, atol=1e-6)
    if encoder in ("slim", "tiny"):
        _train_save_reload(model, x, np.array([[0.0, 1.0]]), tmp_path, "categorical_crossentropy")


# -- pretrained weights, from files made here --------------------------------------------------


def _write_keras2_h5(layers, path, *, head_units=None):
    """A weights file laid out like Keras 2's `save_weights` (the CheXNet file's format).

    Keras 2 named DenseNet's first layers "conv1/conv" where Keras 3 says "conv1_conv".
    """
    with h5py.File(path, "w") as f:
        names = []
        for layer in layers:
            name = (
                layer.name.replace("conv1_", "conv1/", 1)
                if layer.name.startswith("conv1_")
                else layer.name
            )
            names.append(name)
            group = f.create_group(name)
            weight_names = []
            for variable in layer.weights:
                value = variable.numpy()
                if head_units and layer.name == "predictions":
                    value = value[..., :head_units]
                weight_name = f"{name}/{variable.name}:0"
                group.create_dataset(weight_name, data=value)
                weight_names.append(weight_name.encode())
            group.attrs["weight_names"] = weight_names
        f.attrs["layer_names"] = [n.encode() for n in names]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.6"


@pytest.fixture(scope="module")
def densenet_files(tmp_path_factory):
    """A random DenseNet-121 + 14-unit head, written as a CheXNet file and as a no-top file."""
    base = keras.applications.DenseNet121(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    full = keras.Model(base.inputs, keras.layers.Dense(14, name="predictions")(base.output))
    folder = tmp_path_factory.mktemp("weights")
    with_weights = [layer for layer in full.layers if layer.weights]
    _write_keras2_h5(with_weights, folder / CHEXNET_FILE)
    _write_keras2_h5(with_weights, folder / "head10.h5", head_units=10)
    _write_keras2_h5(
        with_weights[:-1], folder / "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    full.save_weights(folder / "chexnet_keras3.weights.h5")
    (folder / "damaged.h5").write_bytes(b"not an HDF5 file")
    expected = {layer.name: _values(layer.weights) for layer in with_weights}
    keras.backend.clear_session()
    return folder, expected


def _assert_encoder_equals(model, expected):
    for name, values in expected.items():
        if name != "predictions":
            for got, want in zip(_values(model.get_layer(name).weights), values, strict=True):
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("file_name", [CHEXNET_FILE, "chexnet_keras3.weights.h5"])
def test_chexnet_weights_load_into_the_encoder(densenet_files, file_name):
    folder, expected = densenet_files
    model = build_segmenter(
        "dla", "chexnet", input_shape=(64, 64, 3), encoder_weights=folder / file_name
    )
    _assert_encoder_equals(model, expected)


def test_named_weights_are_found_in_the_weights_dir(densenet_files, monkeypatch, tmp_path):
    folder, expected = densenet_files
    monkeypatch.setenv("COLLABMASK_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    _assert_encoder_equals(
        build_classifier("chexnet", input_shape=(96, 96, 3), encoder_weights="pretrained"), expected
    )
    model = build_segmenter(
        "unet", "densenet121", input_shape=(64, 64, 3), encoder_weights="imagenet"
    )
    _assert_encoder_equals(model, expected)
    # Inside the segmenter the encoder computes what keras.applications' own model computes.
    notop = folder / "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    bare = keras.applications.DenseNet121(include_top=False, weights=notop, input_shape=(64, 64, 3))
    x = _images(64)
    ours = keras.Model(model.input, model.get_layer(feature_layer_name("densenet121")).output)(x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours),
        keras.ops.convert_to_numpy(bare(keras.applications.densenet.preprocess_input(x.copy()))),
        rtol=1e-4,
        atol=1e-4,
    )


def test_missing_weights_name_the_file_and_where_we_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("COLLABMASK_WEIGHTS_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(FileNotFoundError) as error:
        build_segmenter("unet", "resnet50", input_shape=(64, 64, 3), encoder_weights="imagenet")
    message = str(error.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "mine") in message and str(tmp_path / "keras" / "models") in message
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        build_segmenter(
            "unet", "chexnet", input_shape=(64, 64, 3), encoder_weights=tmp_path / "nope.h5"
        )


@pytest.mark.parametrize(
    ("encoder", "file_name", "message"),
    [
        ("chexnet", "head10.h5", "is not a CheXNet weights file"),
        ("chexnet", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", "14-unit"),
        ("densenet121", CHEXNET_FILE, "does not fit the DenseNet-121 encoder"),
        ("inceptionv3", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", "Inception-v3"),
        ("resnet50", "damaged.h5", "does not fit the ResNet-50 encoder"),
        ("chexnet", "damaged.h5", "is not a CheXNet weights file"),
    ],
)
def test_mismatched_weights_file_is_a_clear_error(densenet_files, encoder, file_name, message):
    folder, _ = densenet_files
    with pytest.raises(ValueError, match=message):
        build_segmenter(
            "unet", encoder, input_shape=(96, 96, 3), encoder_weights=folder / file_name
        )
