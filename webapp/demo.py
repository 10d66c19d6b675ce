"""The embedded mode's demo login and the simulated demo reconstruction."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from reconstruction import Parameters

DEMO_USERNAME = "demo"
#: Steps per pattern size: a probe window overlaps its neighbours by about 90 %.
STEP_FRACTION = 0.1


def demo_login_file() -> Path:
    return Path(settings.PTYCHOPY_HOME) / "demo-login.txt"


def ensure_demo_user() -> tuple[str, str]:
    """Create (or reset to the stored password) the demo superuser; the password survives restarts."""
    path = demo_login_file()
    password = ""
    if path.is_file():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "password":
                password = value.strip()
    if not password:
        password = secrets.token_urlsafe(9)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"username={DEMO_USERNAME}\npassword={password}\n")
        path.chmod(0o600)
    user_model = get_user_model()
    user = user_model.objects.filter(username=DEMO_USERNAME).first()
    if user is None:
        user = user_model(username=DEMO_USERNAME, is_staff=True, is_superuser=True)
    if not user.check_password(password):
        user.set_password(password)
    user.save()
    return DEMO_USERNAME, password


def demo_parameters(iterations: int = 12_000, size_px: int = 64, scan: int = 10) -> Parameters:
    """A simulated scan that runs for a few minutes on a CPU while the live view updates."""
    params = Parameters.from_cmdstr(
        f"./ptycho -jobID=demo -simulate=1 -size={size_px} -scanDims={scan},{scan} -i={iterations} "
        f"-photons=1e6 -updateProbe=2 -algorithm=ePIE"
    )
    step = params.pixel_size_m * size_px * STEP_FRACTION
    return params.replace({"experiment.step_m": (step, step)})


def submit_demo_job():
    """Submit the demo reconstruction unless one is already queued or running; returns the job."""
    from webapp.jobs.models import Job
    from webapp.jobs.services import submit_job

    active = Job.objects.filter(source=Job.Source.DEMO, status__in=Job.UNFINISHED).order_by("-created").first()
    if active is not None:
        return active
    owner = get_user_model().objects.filter(username=DEMO_USERNAME).first()
    return submit_job(demo_parameters(), owner=owner, source="demo", label="Demo: simulated scan")
