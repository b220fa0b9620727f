"""Issue 19: the admin says "audit entries", never "audit entrys": every model's plural is English."""

from __future__ import annotations

import re

import pytest
from django.apps import apps

NAIVE = re.compile(r"([^aeiou]ys|(?:s|x|ch|sh)s)$")  # entrys, switchs, watchs, statuss, boxs


@pytest.mark.parametrize("model", apps.get_models(), ids=lambda m: m._meta.label)
def test_every_models_plural_name_is_english(model: type) -> None:
    options = model._meta  # type: ignore[attr-defined]
    assert not NAIVE.search(str(options.verbose_name_plural)), f"{options.label}: {options.verbose_name_plural!r}"
