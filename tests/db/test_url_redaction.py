"""The settings' URL redaction hides what SQLAlchemy, which connects with these URLs,
reads as the password (issue 14, point 5)."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from lab.settings import redact_password

URLS = [
    "postgresql://lab:p/ss@db.example:5432/lab",
    "postgresql+psycopg://lab:p?ss@db.example/lab?sslmode=require",
    "postgresql://lab:p#ss@db.example/lab",
    "postgresql://lab:a/b?c#d@db.example/lab",
    "redis://:p/w?x#y@redis.example:6379/0",
    "postgresql://lab@db.example/lab",
    "sqlite:////var/lab/lab.db",
]


@pytest.mark.parametrize("url", URLS)
def test_redaction_agrees_with_sqlalchemy(url):
    parsed = make_url(url)
    assert redact_password(url) == parsed.render_as_string(hide_password=True)
    if parsed.password:
        assert str(parsed.password) not in redact_password(url)
