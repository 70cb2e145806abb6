"""The domain of collaborative mask annotation.

Rows here hold no business rules: state changes go through annotation.services.
Database constraints carry the invariants that must survive concurrency and retries.
"""

from __future__ import annotations

import math
import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


def _opaque_token() -> str:
    return secrets.token_urlsafe(24)


class Label(models.TextChoices):
    COVID = "covid", "COVID-19"
    NORMAL = "normal", "Normal"
    OTHER = "other", "Other finding"


class Split(models.TextChoices):
    NONE = "", "Unassigned"
    TRAIN = "train", "Train"
    TEST = "test", "Test"


class Dataset(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    # Masks are kept at the working resolution: the image scaled so its longer side is at most this.
    mask_max_side = models.PositiveIntegerField(default=1024)
    # Exports name it (COCO `licenses`, the dataset card) unless an export sets its own.
    licence = models.CharField(
        max_length=500, blank=True, help_text="e.g. CC BY 4.0, or a URL to the licence text"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Radiograph(models.Model):
    """One imported chest X-ray ("case" in the UI)."""

    class SourceFormat(models.TextChoices):
        PNG = "png", "PNG"
        JPEG = "jpeg", "JPEG"
        DICOM = "dicom", "DICOM"

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="radiographs")
    name = models.CharField(max_length=255, help_text="file name as imported, without folders")
    sha256 = models.CharField(max_length=64, help_text="sha256 of the original file's bytes")
    original = models.FileField(max_length=255)
    source_format = models.CharField(max_length=8, choices=SourceFormat.choices)
    display = models.FileField(max_length=255, help_text="8-bit greyscale PNG, full resolution")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bit_depth = models.PositiveSmallIntegerField()
    work_width = models.PositiveIntegerField(help_text="mask working resolution")
    work_height = models.PositiveIntegerField()
    label = models.CharField(max_length=8, choices=Label.choices, default=Label.COVID)
    patient_key = models.CharField(
        max_length=64, blank=True, help_text="salted one-way hash of the patient identifier"
    )
    split = models.CharField(max_length=8, choices=Split.choices, blank=True, default=Split.NONE)
    fold = models.PositiveSmallIntegerField(null=True, blank=True)
    metadata = models.JSONField(
        default=dict, blank=True, help_text="non-identifying acquisition facts"
    )
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "sha256"], name="radiograph_unique_content"),
        ]
        indexes = [models.Index(fields=["dataset", "label"]), models.Index(fields=["patient_key"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_label_display()})"

    @property
    def patient_group(self) -> str:
        """The group for splits by patient: a case without a patient key is its own group."""
        return self.patient_key or f"case-{self.pk}"

    @property
    def work_pixel_spacing_mm(self) -> tuple[float, float] | None:
        """(row, column) spacing in mm of one pixel at the mask working resolution, or None.

        The import keeps the file's PixelSpacing (else ImagerPixelSpacing) at the original
        resolution in metadata; the working resolution has fewer, larger pixels.
        """
        spacing = (self.metadata or {}).get("pixel_spacing_mm")
        values = spacing if isinstance(spacing, (list, tuple)) else [spacing]
        try:
            row, col = float(values[0]), float(values[-1])  # one value: square pixels
        except (TypeError, ValueError, IndexError):
            return None
        usable = all(math.isfinite(v) and v > 0 for v in (row, col))
        if not (usable and self.work_width and self.work_height):
            return None
        return row * self.height / self.work_height, col * self.width / self.work_width


class Stage(models.Model):
    """One turn of the loop: training, candidates, review, accepted masks."""

    class Mode(models.TextChoices):
        PAIRWISE = "pairwise", "Pairwise knockout"
        NWAY = "nway", "N-way pick"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        TRAINING = "training", "Training"
        PREDICTING = "predicting", "Predicting"
        REVIEWING = "reviewing", "Reviewing"
        CLOSED = "closed", "Closed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class QueueOrder(models.TextChoices):
        RANDOM = "random", "Random"
        INFORMATIVE = "informative", "Informative first (most disagreement first)"
        DATASET = "dataset", "Dataset order"

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="stages")
    number = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=200, blank=True)
    mode = models.CharField(max_length=10, choices=Mode.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DRAFT)
    preset = models.CharField(max_length=40, blank=True)
    config = models.JSONField(
        default=dict, blank=True, help_text="networks, epochs, folds, image size"
    )
    readers_per_case = models.PositiveSmallIntegerField(default=1)
    queue_order = models.CharField(
        max_length=12,
        choices=QueueOrder.choices,
        default=QueueOrder.RANDOM,
        help_text="the order in which readers are given the cases",
    )
    lease_seconds = models.PositiveIntegerField(default=900)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    launched_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["dataset", "number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="stage_unique_number"),
            models.CheckConstraint(
                condition=Q(readers_per_case__gte=1), name="stage_readers_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset} · Stage {self.number}"


class ModelVersion(models.Model):
    """A trained network: what it is, what it learned from, how good it was, where its weights are."""

    class Purpose(models.TextChoices):
        CANDIDATE = "candidate", "Candidate generator"
        DETECTOR = "detector", "Final detector"
        CLASSIFIER = "classifier", "Grad-CAM classifier"
        # The click-to-refine network of the draw screens (mlworker.interactive).
        INTERACTIVE = "interactive", "Click-to-refine"

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="model_versions")
    stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.PROTECT, related_name="model_versions"
    )
    purpose = models.CharField(max_length=12, choices=Purpose.choices)
    arch = models.CharField(max_length=20)
    encoder = models.CharField(max_length=20)
    frozen = models.BooleanField(default=False)
    fold = models.PositiveSmallIntegerField(null=True, blank=True)
    config = models.JSONField(default=dict, blank=True)
    training_set = models.JSONField(
        default=list, blank=True, help_text="GroundTruth ids trained on"
    )
    training_set_sha256 = models.CharField(max_length=64, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    weights = models.FileField(max_length=255, blank=True)
    weights_sha256 = models.CharField(max_length=64, blank=True)
    params_trainable = models.BigIntegerField(null=True, blank=True)
    params_non_trainable = models.BigIntegerField(null=True, blank=True)
    deployed = models.BooleanField(default=False)
    # The training job that made it: a job rerun after a crash finds its model instead of
    # registering a second one.
    job = models.OneToOneField(
        "Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="model_version"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "purpose"],
                condition=Q(deployed=True),
                name="one_deployed_per_purpose",
            ),
        ]

    def __str__(self) -> str:
        fold = f" fold {self.fold}" if self.fold is not None else ""
        return f"{self.arch}/{self.encoder}{fold} #{self.pk}"


class Mask(models.Model):
    """A binary infection mask at the radiograph's working resolution, with its provenance."""

    class Kind(models.TextChoices):
        MANUAL = "manual", "Manual"
        NETWORK = "network", "Network"
        DRAWN = "drawn", "Drawn"
        REFINED = "refined", "Refined"
        # Made from a stage's network masks of the case (annotation.services.consensus_masks).
        STAPLE = "staple", "STAPLE consensus"
        ENSEMBLE = "ensemble", "Network ensemble"

    radiograph = models.ForeignKey(Radiograph, on_delete=models.PROTECT, related_name="masks")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    png = models.FileField(max_length=255, help_text="1-bit PNG at the working resolution")
    pixel_sha256 = models.CharField(max_length=64, help_text="sha256 of the packed mask pixels")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    area = models.PositiveIntegerField(help_text="foreground pixels")
    probability = models.FileField(
        max_length=255, blank=True, help_text="network probability map, 8-bit PNG"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="masks"
    )
    stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.PROTECT, related_name="masks"
    )
    source_name = models.CharField(
        max_length=255, blank=True, help_text="file name it was imported from"
    )
    details = models.JSONField(
        default=dict, blank=True, help_text="how a combined mask was made: its source masks"
    )
    # A candidate's outline redrawn in the one shared style (cxrio.outline): the mask it was
    # redrawn from. Null for masks as drawn, imported or predicted.
    normalised_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="normalisations",
        help_text="the original mask this outline-normalised mask was redrawn from",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["radiograph", "id"]
        constraints = [
            # One imported manual mask per radiograph and content: re-import is a no-op.
            models.UniqueConstraint(
                fields=["radiograph", "pixel_sha256"],
                condition=Q(kind="manual", normalised_from__isnull=True),
                name="mask_unique_manual_content",
            ),
            models.CheckConstraint(
                condition=~Q(kind="network") | Q(model_version__isnull=False),
                name="network_mask_has_model",
            ),
            # A network predicts a case once: a prediction job rerun finds its masks.
            models.UniqueConstraint(
                fields=["radiograph", "model_version"],
                condition=Q(kind="network", normalised_from__isnull=True),
                name="mask_one_prediction_per_model",
            ),
            # One normalised form per original mask: offering it again finds it.
            models.UniqueConstraint(
                fields=["normalised_from"],
                condition=Q(normalised_from__isnull=False),
                name="mask_one_normalisation",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} mask #{self.pk} of {self.radiograph.name}"


class Candidate(models.Model):
    """A mask offered for a radiograph in a stage. Identical masks are offered once."""

    stage = models.ForeignKey(Stage, on_delete=models.PROTECT, related_name="candidates")
    radiograph = models.ForeignKey(Radiograph, on_delete=models.PROTECT, related_name="candidates")
    mask = models.ForeignKey(Mask, on_delete=models.PROTECT, related_name="+")
    pixel_sha256 = models.CharField(max_length=64)
    sources = models.ManyToManyField(Mask, related_name="candidacies", blank=True)
    # The only handle an MD's browser ever sees.
    token = models.CharField(max_length=40, unique=True, default=_opaque_token, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["stage", "radiograph", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["stage", "radiograph", "pixel_sha256"], name="candidate_unique_content"
            ),
        ]

    def __str__(self) -> str:
        return f"candidate #{self.pk} of {self.radiograph_id} in stage {self.stage_id}"


class ReviewTask(models.Model):
    """One reader's job on one radiograph in one stage (or a senior MD's adjudication)."""

    class Kind(models.TextChoices):
        REVIEW = "review", "Review"
        ADJUDICATION = "adjudication", "Adjudication"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        LEASED = "leased", "Leased"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    stage = models.ForeignKey(Stage, on_delete=models.PROTECT, related_name="tasks")
    radiograph = models.ForeignKey(Radiograph, on_delete=models.PROTECT, related_name="tasks")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.REVIEW)
    slot = models.PositiveSmallIntegerField(default=0, help_text="0 .. readers_per_case - 1")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    reader = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="tasks",
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Candidate ids in the order this reader sees them, drawn once per task.
    candidate_order = models.JSONField(default=list, blank=True)
    token = models.CharField(max_length=40, unique=True, default=_opaque_token, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["stage", "radiograph", "kind", "slot"]
        constraints = [
            models.UniqueConstraint(
                fields=["stage", "radiograph", "kind", "slot"], name="task_unique_slot"
            ),
            # An MD never reads the same case twice in a stage.
            models.UniqueConstraint(
                fields=["stage", "radiograph", "kind", "reader"],
                condition=Q(reader__isnull=False),
                name="task_reader_once_per_case",
            ),
        ]
        indexes = [models.Index(fields=["stage", "status"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} task #{self.pk} ({self.status})"


class PairwiseRound(models.Model):
    """One round of a pairwise knockout: champion against challenger."""

    task = models.ForeignKey(ReviewTask, on_delete=models.PROTECT, related_name="rounds")
    number = models.PositiveSmallIntegerField()
    left = models.ForeignKey(Candidate, on_delete=models.PROTECT, related_name="+")
    right = models.ForeignKey(Candidate, on_delete=models.PROTECT, related_name="+")
    winner = models.ForeignKey(
        Candidate,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="empty when the reader found neither acceptable",
    )
    idempotency_key = models.CharField(max_length=64, unique=True)
    time_on_screen_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["task", "number"]
        constraints = [
            models.UniqueConstraint(fields=["task", "number"], name="round_unique_number"),
        ]

    def __str__(self) -> str:
        return f"round {self.number} of task #{self.task_id}"


class Decision(models.Model):
    """What a reader chose in a task. Written once; a retry returns the stored row."""

    class Outcome(models.TextChoices):
        CHOSE = "chose", "Chose a candidate"
        REFINED = "refined", "Refined a candidate"
        DREW = "drew", "Rejected all and drew"

    task = models.ForeignKey(ReviewTask, on_delete=models.PROTECT, related_name="decisions")
    reader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="decisions"
    )
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    candidate = models.ForeignKey(
        Candidate,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="decisions",
        help_text="the chosen candidate, or the one refined",
    )
    mask = models.ForeignKey(Mask, on_delete=models.PROTECT, related_name="decisions")
    position = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="screen position, 1-based"
    )
    time_on_screen_ms = models.PositiveIntegerField(default=0)
    idempotency_key = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(
        null=True, blank=True, help_text="set by 'undo last decision'"
    )
    # Click-to-refine: the clicks ({x, y, positive} in working-image pixels) and lung zones the
    # reader gave, and the network that turned them into the mask (before any brush touch-up).
    clicks = models.JSONField(default=list, blank=True)
    zones = models.JSONField(default=list, blank=True)
    interactive_model = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["task", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["task", "reader"],
                condition=Q(revoked_at__isnull=True),
                name="one_decision_per_task_reader",
            ),
            models.CheckConstraint(
                condition=Q(outcome="drew") | Q(candidate__isnull=False),
                name="decision_names_candidate",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_outcome_display()} in task #{self.task_id} by {self.reader_id}"

    @property
    def outcome_label(self) -> str:
        """The outcome as the worklist and statistics name it: a mask made with click-to-refine
        reads "Refined with N clicks"."""
        if self.clicks:
            n = len(self.clicks)
            return f"Refined with {n} click{'' if n == 1 else 's'}"
        return self.get_outcome_display()


class GroundTruth(models.Model):
    """The accepted mask of a radiograph and how it came to be."""

    class Source(models.TextChoices):
        MANUAL = "manual", "Manual"
        NETWORK = "network", "Network"
        DRAWN = "drawn", "Drawn"
        REFINED = "refined", "Refined"
        STAPLE = "staple", "STAPLE consensus"
        ENSEMBLE = "ensemble", "Network ensemble"

    class Method(models.TextChoices):
        SINGLE = "single", "Single reader"
        MAJORITY = "majority", "Majority"
        ADJUDICATION = "adjudication", "Adjudicated"
        IMPORTED = "imported", "Imported as final"
        AUTO_AGREEMENT = "agreement", "Auto-accepted by agreement"

    radiograph = models.OneToOneField(
        Radiograph, on_delete=models.PROTECT, related_name="ground_truth"
    )
    mask = models.ForeignKey(Mask, on_delete=models.PROTECT, related_name="+")
    stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.PROTECT, related_name="ground_truths"
    )
    source = models.CharField(max_length=8, choices=Source.choices)
    model_versions = models.ManyToManyField(ModelVersion, blank=True, related_name="+")
    readers = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    method = models.CharField(max_length=12, choices=Method.choices)
    agreement = models.FloatField(
        null=True, blank=True, help_text="share of readers who chose this mask"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"ground truth of radiograph #{self.radiograph_id} ({self.source})"


class CaseDisagreement(models.Model):
    """How much a case's candidates disagree in a stage (mlworker.disagreement), and what the
    agreement rule made of it. Shown to admins and researchers, never to readers."""

    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="disagreements")
    radiograph = models.ForeignKey(
        Radiograph, on_delete=models.CASCADE, related_name="disagreements"
    )
    n_candidates = models.PositiveSmallIntegerField()
    n_masks = models.PositiveSmallIntegerField(
        default=0, help_text="masks behind the candidates (networks, manual)"
    )
    mean_pairwise_dice = models.FloatField(help_text="1 when every candidate is the same")
    min_pairwise_dice = models.FloatField()
    disagreement_area = models.FloatField(help_text="share of pixels where they do not all agree")
    mean_entropy = models.FloatField(help_text="bits, of the networks' averaged probability map")
    auto_candidate = models.ForeignKey(
        Candidate,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="the candidate the agreement rule accepts (or would have, for an audit sample)",
    )
    audit_sample = models.BooleanField(
        default=False, help_text="the candidates agreed, but the case was sent to readers"
    )
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["stage", "mean_pairwise_dice", "radiograph"]
        constraints = [
            models.UniqueConstraint(
                fields=["stage", "radiograph"], name="disagreement_once_per_case"
            ),
        ]

    def __str__(self) -> str:
        return f"disagreement of radiograph #{self.radiograph_id} in stage {self.stage_id}"


class Job(models.Model):
    """A unit of worker work, claimed with a conditional update so it runs once."""

    class Kind(models.TextChoices):
        IMPORT = "import", "Import"
        TRAIN = "train", "Train"
        PREDICT = "predict", "Predict"
        DETECTOR = "detector", "Train detector"
        CLASSIFIER = "classifier", "Train Grad-CAM classifier"
        # The mean of a detector run's networks on one fold, evaluated on that fold's test set.
        ENSEMBLE = "ensemble", "Detector ensemble"
        INTERACTIVE = "interactive", "Train click-to-refine"
        INFER = "infer", "Infection map"
        EXPORT = "export", "Export"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    dataset = models.ForeignKey(
        Dataset, null=True, blank=True, on_delete=models.PROTECT, related_name="jobs"
    )
    stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.PROTECT, related_name="jobs"
    )
    params = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0, help_text="0..1")
    progress_detail = models.JSONField(
        default=dict, blank=True, help_text="epoch, batch, loss curve, eta"
    )
    result = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "kind"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} job #{self.pk} ({self.state})"


class DrawingDraft(models.Model):
    """The drawing a reader has in progress for a task, autosaved so a reload loses nothing."""

    task = models.ForeignKey(ReviewTask, on_delete=models.CASCADE, related_name="drafts")
    reader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # A 1-bit PNG at the working resolution is a few kB: kept in the row, not as a file.
    png = models.BinaryField()
    # When the reader's browser made this drawing: the client compares it with its local copy.
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "reader"], name="draft_unique_task_reader"),
        ]

    def __str__(self) -> str:
        return f"draft of task #{self.task_id} by {self.reader_id}"


class WorkerNode(models.Model):
    """A Celery worker as it last reported itself (the admin's worker board)."""

    name = models.CharField(
        max_length=255, unique=True, help_text="Celery node name, e.g. gpu0@host"
    )
    queues = models.JSONField(default=list, blank=True)
    gpus = models.JSONField(default=list, blank=True, help_text="[{name, memory_mb}]")
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Export(models.Model):
    """A ground-truth dataset export: one zip, immutable once its job has finished.

    Its state is its job's state; the file, size, sha256 and n_cases are written once, by the
    export job, and never changed afterwards.
    """

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="exports")
    job = models.OneToOneField(Job, on_delete=models.PROTECT, related_name="export")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    params = models.JSONField(
        default=dict, blank=True, help_text="stages, include_controls, formats, split mode"
    )
    file = models.FileField(max_length=255, blank=True, help_text="the zip, in default storage")
    size = models.BigIntegerField(null=True, blank=True, help_text="bytes")
    sha256 = models.CharField(max_length=64, blank=True)
    n_cases = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"export #{self.pk} of {self.dataset}"


class AuditImmutable(Exception):
    """An audit event was about to be changed or deleted: the trail is append-only."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditImmutable("audit events are never changed")

    def delete(self):
        raise AuditImmutable("audit events are never deleted")


class AuditEvent(models.Model):
    """One entry of the audit trail: who did what, when, from where, old → new.

    Written once by annotation.services.audit and never changed: save() on a stored row,
    delete() and queryset update/delete refuse, and on PostgreSQL a trigger refuses UPDATE
    and DELETE from any client.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The name as it was (or as typed, for a failed login of an unknown account).
    actor_name = models.CharField(max_length=150, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True, help_text="client address")
    action = models.CharField(max_length=40, db_index=True)
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    dataset = models.ForeignKey(
        Dataset, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    old = models.JSONField(null=True, blank=True)
    new = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["dataset", "at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} {self.action}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditImmutable("audit events are never changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditImmutable("audit events are never deleted")


class CaseFlag(models.Model):
    """A reader's note that a case needs an admin's eye; a skipped case also went back to the
    pool for other readers, and never returns to this one in this stage."""

    class Reason(models.TextChoices):
        POOR_QUALITY = "poor_quality", "Poor image quality"
        NOT_COVID = "not_covid", "Not COVID-19"
        UNSURE = "unsure", "Unsure"
        OTHER = "other", "Other"

    stage = models.ForeignKey(Stage, on_delete=models.PROTECT, related_name="flags")
    radiograph = models.ForeignKey(Radiograph, on_delete=models.PROTECT, related_name="flags")
    # The task the reader flagged it in (a skipped task goes on to another reader).
    task = models.ForeignKey(ReviewTask, on_delete=models.PROTECT, related_name="flags")
    reader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="case_flags"
    )
    reason = models.CharField(max_length=16, choices=Reason.choices)
    comment = models.TextField(blank=True)
    skipped = models.BooleanField(default=False)
    idempotency_key = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["stage", "reader", "skipped"]),
            models.Index(fields=["resolved_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.get_reason_display()} flag on case #{self.radiograph_id}"
