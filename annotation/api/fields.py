"""Strict input fields: a value of the wrong JSON type is refused, not coerced.

DRF's fields accept 5.0 or "5" for an integer, 1 or "yes" for a boolean and 123 for a string;
the API promises the types its OpenAPI schema states, so clients find mistakes at once.
"""

from __future__ import annotations

import re

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

_INTEGER = re.compile(r"-?[0-9]+")


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, or (in a query string) its decimal digits."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not (
            isinstance(data, int) or (isinstance(data, str) and _INTEGER.fullmatch(data))
        ):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean, or (in a query string) true / false."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            return data
        if data in ("true", "false"):
            return data == "true"
        self.fail("invalid", input=data)


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "format": "binary"})
class UploadField(serializers.FileField):
    """A file sent as a multipart part (the schema says binary, not a URL)."""
