"""What the review screens' flag form offers: the reasons a reader may give."""

from django import template

from annotation.models import CaseFlag

register = template.Library()


@register.simple_tag
def flag_reasons() -> list[tuple[str, str]]:
    return list(CaseFlag.Reason.choices)
