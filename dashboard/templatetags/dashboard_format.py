"""Numbers as people read them: digits grouped by thousands."""

from django import template

register = template.Library()


@register.filter
def digits(value: int | str | None) -> str:
    """12345678 -> "12,345,678" (exact for any int64, unlike a float)."""
    if value is None or value == "":
        return ""
    return f"{int(value):,}"
