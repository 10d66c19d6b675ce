"""Typed settings from the environment (webapp/envconfig.py through webapp/settings.py): each kind of bad value
stops the settings with a message naming the variable and its value; EMAIL_URL and the separate EMAIL_* variables
reach Django's mail settings, and a mail sent with them arrives at a real SMTP server on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.smtp import SmtpSink
from webapp.envconfig import Env
from webapp.site_security import SiteConfigError

MAIL_KEYS = ("EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS",
             "EMAIL_USE_SSL")


def embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without production or mail variables, a private PTYCHOPY_HOME, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "EMAIL_URL") and not k.startswith("EMAIL_")}
    return {**env, "PTYCHOPY_HOME": str(tmp_path), **extra}


def load_settings(env: dict[str, str], code: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", f"import webapp.settings as s\n{code}"], env=env,
                          capture_output=True, text=True, timeout=60, check=False, cwd=Path(__file__).parents[2])


def test_numbers_take_the_default_when_unset_or_empty_and_name_a_bad_value() -> None:
    env = Env({"A": "12", "B": " ", "C": "1e3", "D": "abc", "E": "2.5", "F": "-1"})
    assert env.int("A", 5) == 12 and env.int("B", 5) == 5 and env.int("MISSING", 7) == 7
    assert env.float("C", 1.0) == 1000.0
    with pytest.raises(SiteConfigError, match=r"^D='abc' is not an integer \(e\.g\. 5\)$"):
        env.int("D", 5)
    with pytest.raises(SiteConfigError, match=r"^E='2\.5' is not an integer"):
        env.int("E", 5)
    with pytest.raises(SiteConfigError, match=r"^D='abc' is not a number \(e\.g\. 0\.8\)$"):
        env.float("D", 0.8)
    with pytest.raises(SiteConfigError, match=r"^F='-1' is below the smallest allowed value 0$"):
        env.int("F", 5, minimum=0)
    with pytest.raises(SiteConfigError, match=r"is not a finite number"):
        Env({"G": "nan"}).float("G", 1.0)


def test_switches_accept_the_usual_words_and_refuse_others() -> None:
    words = {"A": "Yes", "B": "off", "C": "1", "D": "FALSE", "E": "maybe"}
    env = Env(words)
    assert [env.bool(k, d) for k, d in (("A", False), ("B", True), ("C", False), ("D", True), ("X", True))] == [
        True, False, True, False, True]
    with pytest.raises(SiteConfigError, match=r"^E='maybe' is not a true/false value \(use 1 or 0"):
        env.bool("E", False)


def test_lists_drop_blanks_and_every_read_is_recorded() -> None:
    env = Env({"HOSTS": " a.example, ,b.example ", "ROOTS": "/x::/y", "SIZES": "64, 128", "BAD": "64,128px"})
    assert env.list("HOSTS") == ["a.example", "b.example"]
    assert env.list("ROOTS", sep=":") == ["/x", "/y"]
    assert env.int_list("SIZES", "256") == [64, 128] and env.int_list("NONE", "256") == [256]
    with pytest.raises(SiteConfigError, match=r"^BAD='64,128px' is not a list of whole numbers"):
        env.int_list("BAD", "256")
    assert set(env.read) == {"HOSTS", "ROOTS", "SIZES", "NONE", "BAD"}
    assert env.read["SIZES"].kind == "int list" and env.read["NONE"].default == "256"


def test_email_url_gives_server_port_login_and_security() -> None:
    starttls = Env({"EMAIL_URL": "smtp+tls://ptycho%40lab:p%3Ass%2Fw@mail.example.org:587"}).email_url("EMAIL_URL")
    assert {k: starttls[k] for k in MAIL_KEYS if k in starttls} == {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "mail.example.org",
        "EMAIL_PORT": 587, "EMAIL_HOST_USER": "ptycho@lab", "EMAIL_HOST_PASSWORD": "p:ss/w", "EMAIL_USE_TLS": True}
    ssl = Env({"EMAIL_URL": "smtps://mail.example.org:465"}).email_url("EMAIL_URL")
    assert ssl["EMAIL_HOST"] == "mail.example.org" and ssl["EMAIL_PORT"] == 465 and ssl.get("EMAIL_USE_TLS")
    assert Env({}).email_url("EMAIL_URL") == {}
    with pytest.raises(SiteConfigError, match=r"^EMAIL_URL: scheme 'http' is not a mail URL scheme; use one of"):
        Env({"EMAIL_URL": "http://mail.example.org"}).email_url("EMAIL_URL")
    with pytest.raises(SiteConfigError, match=r"^EMAIL_URL: scheme '\(none\)'"):
        Env({"EMAIL_URL": "mail.example.org:25"}).email_url("EMAIL_URL")
    with pytest.raises(SiteConfigError, match=r"^EMAIL_URL: the mail URL names no host"):
        Env({"EMAIL_URL": "smtp://:25"}).email_url("EMAIL_URL")


@pytest.mark.parametrize(("var", "value", "message"), [
    ("PTYCHOPY_FRAME_RATE_HZ", "fast", "PTYCHOPY_FRAME_RATE_HZ='fast' is not a number (e.g. 5.0)"),
    ("EMAIL_PORT", "twenty-five", "EMAIL_PORT='twenty-five' is not an integer (e.g. 25)"),
    ("SECURE_HSTS_PRELOAD", "sometimes", "SECURE_HSTS_PRELOAD='sometimes' is not a true/false value"),
    ("PTYCHOPY_MAX_WORKER_LOSSES", "0", "PTYCHOPY_MAX_WORKER_LOSSES='0' is below the smallest allowed value 1"),
])
def test_a_bad_value_stops_the_settings_naming_it(tmp_path, var, value, message) -> None:
    out = load_settings(embedded_env(tmp_path, **{var: value}))
    assert out.returncode == 1 and message in out.stderr, out.stderr[-1500:]


def test_the_separate_variables_override_parts_of_email_url(tmp_path) -> None:
    code = f"import json; print(json.dumps({{k: getattr(s, k) for k in {MAIL_KEYS!r}}}))"
    out = load_settings(embedded_env(tmp_path, EMAIL_URL="smtp+tls://robot:from-url@mail.example.org:587",
                                     EMAIL_HOST_PASSWORD="from-secret-store"), code)
    assert out.returncode == 0, out.stderr[-1500:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "mail.example.org",
        "EMAIL_PORT": 587, "EMAIL_HOST_USER": "robot", "EMAIL_HOST_PASSWORD": "from-secret-store",
        "EMAIL_USE_TLS": True, "EMAIL_USE_SSL": False}
    out = load_settings(embedded_env(tmp_path, EMAIL_URL="smtp+tls://mail.example.org:587", EMAIL_USE_SSL="1"))
    assert out.returncode == 1 and "EMAIL_USE_TLS and EMAIL_USE_SSL are both on: choose one" in out.stderr
    out = load_settings(embedded_env(tmp_path), code)  # nothing set: mails are dropped with a log line
    assert json.loads(out.stdout.strip().splitlines()[-1])["EMAIL_BACKEND"] == (
        "webapp.accounts.mail.SuppressedEmailBackend")


def test_a_mail_sent_with_email_url_reaches_that_server(tmp_path) -> None:
    code = ("import django; django.setup()\nfrom django.core.mail import send_mail\n"
            "print(send_mail('ptychopy test', 'job 4 done', None, ['olga@example.org']))")
    with SmtpSink() as smtp:
        out = load_settings(embedded_env(tmp_path, EMAIL_URL=f"smtp://127.0.0.1:{smtp.port}",
                                         DEFAULT_FROM_EMAIL="ptycho@beamline.example.org"), code)
        assert out.returncode == 0 and out.stdout.strip().endswith("1"), out.stderr[-1500:]
        (mail,) = smtp.wait_for(1, timeout=10)
    assert mail["Subject"] == "ptychopy test" and mail["To"] == "olga@example.org"
    assert mail["From"] == "ptycho@beamline.example.org" and "job 4 done" in mail.get_content()
