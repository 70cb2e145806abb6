"""Output serializers of the data endpoints (datasets, radiographs, ground truths, stages, jobs).

Views own their input serializers. Readers appear as pseudonyms (reader-<id>), as in exports.
"""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.reverse import reverse

from annotation.models import Dataset, GroundTruth, Job, ModelVersion, Radiograph, Stage
from annotation.services.exports.manifest import reader_name


class DatasetSerializer(serializers.ModelSerializer):
    n_cases = serializers.IntegerField(read_only=True)
    n_covid = serializers.IntegerField(read_only=True)
    n_manual = serializers.IntegerField(read_only=True)
    n_accepted = serializers.IntegerField(read_only=True)

    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "description",
            "mask_max_side",
            "licence",
            "created_at",
            "n_cases",
            "n_covid",
            "n_manual",
            "n_accepted",
        ]


class RadiographSerializer(serializers.ModelSerializer):
    has_ground_truth = serializers.SerializerMethodField()
    image_url = serializers.SerializerMethodField()

    class Meta:
        model = Radiograph
        fields = [
            "id",
            "dataset",
            "name",
            "sha256",
            "source_format",
            "width",
            "height",
            "bit_depth",
            "work_width",
            "work_height",
            "label",
            "split",
            "fold",
            "patient_key",
            "metadata",
            "imported_at",
            "has_ground_truth",
            "image_url",
        ]

    def get_has_ground_truth(self, obj: Radiograph) -> bool:
        return hasattr(obj, "ground_truth")

    def get_image_url(self, obj: Radiograph) -> str:
        return reverse("api:radiograph-image", args=[obj.pk], request=self.context.get("request"))


class ModelVersionBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "arch", "encoder", "fold", "frozen", "purpose", "created_at"]


class StageBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Stage
        fields = ["id", "number", "name", "mode"]


class GroundTruthSerializer(serializers.ModelSerializer):
    stage = StageBriefSerializer(read_only=True, allow_null=True)
    readers = serializers.SerializerMethodField()
    model_versions = ModelVersionBriefSerializer(many=True, read_only=True)
    mask_area = serializers.IntegerField(source="mask.area", read_only=True)
    mask_width = serializers.IntegerField(source="mask.width", read_only=True)
    mask_height = serializers.IntegerField(source="mask.height", read_only=True)
    mask_url = serializers.SerializerMethodField()

    class Meta:
        model = GroundTruth
        fields = [
            "id",
            "radiograph",
            "stage",
            "source",
            "method",
            "agreement",
            "readers",
            "model_versions",
            "created_at",
            "mask_area",
            "mask_width",
            "mask_height",
            "mask_url",
        ]

    def get_readers(self, obj: GroundTruth) -> list[str]:
        return [reader_name(u.pk) for u in obj.readers.all()]

    def get_mask_url(self, obj: GroundTruth) -> str:
        return reverse("api:groundtruth-mask", args=[obj.pk], request=self.context.get("request"))


class StageSerializer(serializers.ModelSerializer):
    n_ground_truths = serializers.IntegerField(read_only=True)

    class Meta:
        model = Stage
        fields = [
            "id",
            "dataset",
            "number",
            "name",
            "mode",
            "status",
            "preset",
            "config",
            "readers_per_case",
            "queue_order",
            "created_at",
            "launched_at",
            "closed_at",
            "n_ground_truths",
        ]


class JobSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "state",
            "dataset",
            "stage",
            "params",
            "progress",
            "progress_detail",
            "result",
            "error",
            "attempts",
            "cancel_requested",
            "created_at",
            "started_at",
            "finished_at",
        ]
