"""Settings come from the environment and fail loudly, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    ours = ("SENDPLANE_", "DATABASE_URL", "SECRET_KEY", "CELERY_", "EMAIL_", "SPAMD_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    clean.update({"SENDPLANE_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "controlplane.settings", **env})
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL)"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)


def test_embedded_default_needs_no_server(tmp_path: Path) -> None:
    result = load_settings(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "filesystem://localhost/"]
    assert (tmp_path / "secret_key").exists() and (tmp_path / "broker" / "queue").is_dir()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"EMAIL_PORT": "smtp"}, "EMAIL_PORT must be an integer"),
        ({"EMAIL_PORT": "70000"}, "EMAIL_PORT must be at most 65535"),
        ({"SPAMD_PORT": "-1"}, "SPAMD_PORT must be at least 1"),
        ({"DEBUG": "maybe"}, "DEBUG must be true or false"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL must be a sqlite:// or postgres:// URL"),
        ({"DATABASE_URL": "postgres://u@h/db"}, "SECRET_KEY (or SECRET_KEY_FILE) is required"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY must be at least 32 characters"),
        ({"CELERY_BROKER_URL": "kafka://x"}, "CELERY_BROKER_URL: unsupported broker scheme"),
        ({"EMAIL_USE_TLS": "1", "EMAIL_USE_SSL": "1"}, "EMAIL_USE_TLS and EMAIL_USE_SSL are both true"),
        ({"SENDPLANE_RENDER_TIMEOUT": "5"}, "SENDPLANE_RENDER_TIMEOUT is not a Sendplane setting"),
        ({"SENDPLANE_RENDER_MAX_NESTING": "40"}, "SENDPLANE_RENDER_MAX_NESTING must be at most 18"),
        ({"SECRET_KEY_FILE": "/nonexistent/key"}, "SECRET_KEY_FILE: cannot read"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
    ],
)
def test_malformed_variable_stops_start_up_naming_it(tmp_path: Path, env: dict[str, str], named: str) -> None:
    result = load_settings(tmp_path, **env)
    assert result.returncode != 0
    assert named in result.stderr


def test_secret_may_come_from_a_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k" * 40 + "\n")
    result = load_settings(
        tmp_path, SECRET_KEY_FILE=str(key), DATABASE_URL="postgres://postgres@127.0.0.1/x", SENDPLANE_PUBLIC_URL="https://sp.example.com"
    )
    assert result.returncode == 0, result.stderr


# --- issue 18: production refuses to send unsubscribe links that are not https ---------------------------

PRODUCTION = {"DATABASE_URL": "postgres://postgres@127.0.0.1/x", "SECRET_KEY": "k" * 40}


@pytest.mark.parametrize("url", [None, "http://sendplane.example.com", "https://", "ftp://sendplane.example.com"])
def test_production_refuses_to_start_without_an_https_public_url(tmp_path: Path, url: str | None) -> None:
    env = PRODUCTION | ({"SENDPLANE_PUBLIC_URL": url} if url is not None else {})
    result = load_settings(tmp_path, **env)
    assert result.returncode != 0
    assert "SENDPLANE_PUBLIC_URL must be an https:// URL in production" in result.stderr


def test_production_starts_with_an_https_public_url_and_the_embedded_default_without_one(tmp_path: Path) -> None:
    assert load_settings(tmp_path, **PRODUCTION, SENDPLANE_PUBLIC_URL="https://sendplane.example.com/").returncode == 0
    assert load_settings(tmp_path / "embedded").returncode == 0  # the newcomer's http://localhost:8000


def test_an_installation_nobody_outside_reaches_may_say_so(tmp_path: Path) -> None:
    result = load_settings(tmp_path, **PRODUCTION, SENDPLANE_INSECURE_PUBLIC_URL="true")
    assert result.returncode == 0, result.stderr
