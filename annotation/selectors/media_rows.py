"""The two reads behind every review image, written out as single statements.

Each decision fetches six images, and each image request reads its task (the access check) and
the mask it shows. Built by the ORM, those two lookups cost about 1.1 ms of CPU per image (query
compilation, not the database: the statements run in microseconds); written out, 0.1 ms. The
rows come back as model instances holding just the columns read, as `.only()` would give, so
the callers (annotation.selectors.review) use them like any other.
"""

from __future__ import annotations

from functools import cache

from django.db import connections, router

from annotation.models import Candidate, Decision, Mask, Radiograph, ReviewTask


def _in_model_order(model, names: set[str]) -> tuple[str, ...]:
    """Field names as Model.from_db() takes them: in the model's order."""
    return tuple(f.attname for f in model._meta.concrete_fields if f.attname in names)


TASK_FIELDS = _in_model_order(
    ReviewTask,
    {"id", "token", "kind", "status", "reader_id", "candidate_order", "radiograph_id"},
)
RADIOGRAPH_FIELDS = _in_model_order(Radiograph, {"id", "display", "work_width", "work_height"})
MASK_FIELDS = _in_model_order(Mask, {"id", "pixel_sha256", "png"})


def _columns(model, alias_name: str, fields: tuple[str, ...], qn) -> str:
    return ", ".join(f"{alias_name}.{qn(model._meta.get_field(f).column)}" for f in fields)


@cache
def _task_sql(alias: str) -> str:
    qn = connections[alias].ops.quote_name
    task, radiograph = ReviewTask._meta, Radiograph._meta
    return (
        f"SELECT {_columns(ReviewTask, 't', TASK_FIELDS, qn)},"
        f" {_columns(Radiograph, 'r', RADIOGRAPH_FIELDS, qn)}"
        f" FROM {qn(task.db_table)} t JOIN {qn(radiograph.db_table)} r"
        f" ON r.{qn(radiograph.pk.column)} = t.{qn(task.get_field('radiograph').column)}"
        f" WHERE t.{qn(task.get_field('token').column)} = %s"
        f" AND t.{qn(task.get_field('reader').column)} = %s"
    )


@cache
def _mask_sql(alias: str, option_model: type) -> str:
    qn = connections[alias].ops.quote_name
    option, mask = option_model._meta, Mask._meta
    return (
        f"SELECT {_columns(Mask, 'm', MASK_FIELDS, qn)}"
        f" FROM {qn(option.db_table)} o JOIN {qn(mask.db_table)} m"
        f" ON m.{qn(mask.pk.column)} = o.{qn(option.get_field('mask').column)}"
        f" WHERE o.{qn(option.pk.column)} = %s"
    )


def media_task_row(*, token: str, reader_id: int) -> ReviewTask | None:
    """The task behind a token if `reader_id` holds (or decided) it, cancelled or not, with
    TASK_FIELDS and its radiograph's RADIOGRAPH_FIELDS."""
    alias = router.db_for_read(ReviewTask)
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(_task_sql(alias), [token, reader_id])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row[: len(TASK_FIELDS)])
    order = TASK_FIELDS.index("candidate_order")
    field = ReviewTask._meta.get_field("candidate_order")
    values[order] = field.from_db_value(values[order], None, connection)
    task = ReviewTask.from_db(alias, TASK_FIELDS, values)
    radiograph = Radiograph.from_db(alias, RADIOGRAPH_FIELDS, row[len(TASK_FIELDS) :])
    ReviewTask.radiograph.field.set_cached_value(task, radiograph)
    return task


def option_mask_row(*, option_model: type[Candidate] | type[Decision], option_id: int) -> Mask:
    """The stored mask (MASK_FIELDS) behind a candidate or a reader's decision."""
    alias = router.db_for_read(option_model)
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(_mask_sql(alias, option_model), [option_id])
        row = cursor.fetchone()
    if row is None:
        raise option_model.DoesNotExist(f"no {option_model.__name__} {option_id}")
    return Mask.from_db(alias, MASK_FIELDS, row)
