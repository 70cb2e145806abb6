from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from annotation import models

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        if extracted:
            # get_or_create: transactional tests flush the groups the migration made.
            self.groups.add(*(Group.objects.get_or_create(name=name)[0] for name in extracted))
        if create:
            self.save()


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Dataset

    name = factory.Sequence(lambda n: f"dataset-{n}")


# --- review: radiographs, masks, stages and candidates (generated pixels, no import) ------


def _synthetic_cxr(width: int, height: int, seed: int):
    """A small greyscale image that looks like something: a bright disc on a soft gradient."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.35, 0.65)
    disc = np.exp(-(((xx - cx) / (0.3 * width)) ** 2 + ((yy - cy) / (0.35 * height)) ** 2))
    image = 40 + 150 * disc + 30 * yy / height + rng.normal(0, 6, (height, width))
    return np.clip(image, 0, 255).astype(np.uint8)


def _store_display(radiograph_name: str, width: int, height: int, seed: int) -> tuple[str, str]:
    import hashlib

    from annotation.storage import DISPLAY, blob_write, content_path
    from cxrio.images import encode_png

    data = encode_png(_synthetic_cxr(width, height, seed))
    sha = hashlib.sha256(data + radiograph_name.encode()).hexdigest()
    path = content_path(DISPLAY, hashlib.sha256(data).hexdigest(), "png")
    blob_write(path, data)
    return path, sha


class RadiographFactory(factory.django.DjangoModelFactory):
    """A case with a generated display image stored on the default storage."""

    class Meta:
        model = models.Radiograph

    dataset = factory.SubFactory(DatasetFactory)
    name = factory.Sequence(lambda n: f"case-{n:04d}.png")
    source_format = models.Radiograph.SourceFormat.PNG
    width = 64
    height = 48
    bit_depth = 8
    work_width = factory.SelfAttribute("width")
    work_height = factory.SelfAttribute("height")
    label = models.Label.COVID

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        import zlib

        if not kwargs.get("display"):
            path, sha = _store_display(
                kwargs["name"],
                kwargs["width"],
                kwargs["height"],
                zlib.crc32(kwargs["name"].encode()),
            )
            kwargs["display"] = path
            kwargs.setdefault("original", path)
            kwargs.setdefault("sha256", sha)
        return super()._create(model_class, *args, **kwargs)


class StageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Stage

    dataset = factory.SubFactory(DatasetFactory)
    number = factory.Sequence(lambda n: n + 1)
    mode = models.Stage.Mode.NWAY
    status = models.Stage.Status.REVIEWING


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.ModelVersion

    dataset = factory.SubFactory(DatasetFactory)
    purpose = models.ModelVersion.Purpose.CANDIDATE
    arch = "unet"
    encoder = "densenet121"


def mask_of(radiograph, pixels, *, kind="manual", **fields):
    """A stored Mask with these boolean pixels (at the case's working resolution)."""
    from annotation.services.candidates import mask_create

    return mask_create(radiograph=radiograph, pixels=pixels, kind=kind, **fields)


def review_stage(
    *,
    n_cases: int = 2,
    mode: str = "nway",
    n_networks: int = 4,
    readers_per_case: int = 1,
    include_manual: bool = True,
    width: int = 64,
    height: int = 48,
    seed: int = 0,
):
    """A stage in review: n_cases COVID-19 cases, each with a manual mask and n_networks
    distinct network candidates, and open review tasks."""
    import numpy as np

    from annotation.demo.review import review_demo_stage

    dataset = DatasetFactory()
    rng = np.random.default_rng(seed)
    for _ in range(n_cases):
        radiograph = RadiographFactory(dataset=dataset, width=width, height=height)
        yy, xx = np.mgrid[0:height, 0:width]
        cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
        pixels = ((xx - cx) / (0.2 * width)) ** 2 + ((yy - cy) / (0.25 * height)) ** 2 <= 1
        mask_of(radiograph, pixels, kind="manual", source_name=f"mask_{radiograph.name}")
    return review_demo_stage(
        dataset=dataset,
        mode=mode,
        n_networks=n_networks,
        include_manual=include_manual,
        readers_per_case=readers_per_case,
        seed=seed,
    )
