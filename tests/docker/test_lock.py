"""The Docker images install from lock files (requirements/*.lock, written by requirements/lock.sh with uv), and
each lock covers every dependency pyproject.toml declares for its image: the base dependencies, the image's
extras, and the extras of those dependencies (dramatiq[redis], psycopg[binary,pool]), each pinned to a version
its bound allows, with hashes. No Docker engine is needed."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.docker.test_compose import _dockerfile_instructions

REPO = Path(__file__).resolve().parents[2]
LOCK_SCRIPT = REPO / "requirements" / "lock.sh"
# The base image's Python, which each lock is resolved for.
IMAGE_PYTHON = {"web.Dockerfile": "3.11", "worker.Dockerfile": "3.12"}


def locks_made_by_the_script() -> dict[str, tuple[str, list[str]]]:
    """``{"requirements/web.lock": ("3.11", ["web", "epics"]), ...}`` from the compile lines of lock.sh."""
    found = re.findall(r"^compile (requirements/\S+\.lock) (\d\.\d+) ([a-z0-9 -]+?)\s*(?:#|$)",
                       LOCK_SCRIPT.read_text(), re.MULTILINE)
    return {lock: (py, extras.split()) for lock, py, extras in found}


def read_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """``{canonical name: (version, [sha256 hashes])}`` of a pip requirements file with hashes."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^([A-Za-z0-9._-]+)==(\S+?)(?:\s*;[^-]*)?((?:\s+--hash=sha256:[0-9a-f]{64})*)\s*$", line)
        assert m, f"{path.name}: not a pinned requirement with hashes: {line[:120]}"
        pins[canonicalize_name(m.group(1))] = (m.group(2), re.findall(r"sha256:([0-9a-f]{64})", m.group(3)))
    return pins


def declared(extras: list[str], python: str) -> list[Requirement]:
    """The requirements pyproject.toml declares for ``extras`` on linux x86_64 with ``python``."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = [("", project["dependencies"])] + [(e, project["optional-dependencies"][e]) for e in extras]
    env = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}
    out = []
    for extra, reqs in groups:
        for text in reqs:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({**env, "extra": extra}):
                out.append(req)
    return out


def extras_of(req: Requirement) -> list[Requirement]:
    """What ``req``'s extras add (e.g. psycopg[binary] -> psycopg-binary), from the installed distribution."""
    if not req.extras:
        return []
    try:
        requires = importlib.metadata.requires(req.name) or []
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{req.name} is not installed here, so the extras {sorted(req.extras)} cannot be checked")
    out = []
    for text in requires:
        dep = Requirement(text)
        if dep.marker is not None and any(dep.marker.evaluate({"extra": e}) for e in req.extras) and \
                not dep.marker.evaluate({"extra": ""}):
            out.append(dep)
    return out


def lock_of(dockerfile: str) -> str:
    """The lock file the Dockerfile installs, checked to be installed the locked way."""
    steps = [(word, rest) for word, rest in _dockerfile_instructions(REPO / "docker" / dockerfile)]
    installs = [(i, rest) for i, (word, rest) in enumerate(steps) if word == "RUN" and "pip install" in rest]
    locks = [re.search(r"-r (requirements/\S+\.lock)", rest) for _, rest in installs]
    locked = [(i, m.group(1)) for (i, _), m in zip(installs, locks, strict=True) if m]
    assert len(locked) == 1, f"{dockerfile}: expected one pip install -r requirements/<x>.lock, found {locked}"
    lock_step, lock = locked[0]
    assert re.search(r"--require-hashes\b", steps[lock_step][1]) and "--no-deps" in steps[lock_step][1], (
        f"{dockerfile}: the lock is installed without --require-hashes --no-deps: {steps[lock_step][1]}")
    for i, rest in installs:  # every other pip install adds only the project itself, resolving nothing
        if i != lock_step:
            assert re.search(r"pip install --no-deps \.(\s|$)", rest), f"{dockerfile}: resolves packages: {rest}"
            assert i > lock_step, f"{dockerfile}: the project is installed before its locked dependencies"
    source_copies = [i for i, (word, rest) in enumerate(steps) if word == "COPY" and rest.split()[0] == "webapp"]
    assert source_copies and min(source_copies) > lock_step, (
        f"{dockerfile}: the source is copied before the locked install (no layer cache for dependencies)")
    return lock


@pytest.mark.parametrize("dockerfile", sorted(IMAGE_PYTHON))
def test_each_image_installs_its_lock_with_hashes_then_only_the_project(dockerfile: str) -> None:
    lock = lock_of(dockerfile)
    made = locks_made_by_the_script()
    assert lock in made, f"{dockerfile} installs {lock}, which requirements/lock.sh does not write ({sorted(made)})"
    python, _ = made[lock]
    assert python == IMAGE_PYTHON[dockerfile], f"{lock} is resolved for Python {python}, the image runs that of " \
                                               f"{IMAGE_PYTHON[dockerfile]}"
    text = (REPO / "docker" / dockerfile).read_text()
    base = re.search(r"^FROM (\S+)", text, re.MULTILINE)
    assert base is not None
    image = base.group(1)
    if image.startswith("${"):
        arg = re.search(rf"^ARG {re.escape(image[2:-1])}=(\S+)", text, re.MULTILINE)
        assert arg is not None
        image = arg.group(1)
    assert (f"python:{python}-" in image) or (python == "3.12" and "ubuntu24.04" in image), (
        f"{dockerfile}: base image {image} does not run Python {python}")


def lock_problems(pins: dict[str, tuple[str, list[str]]], lock: str, python: str, extras: list[str]) -> list[str]:
    """What ``pins`` lacks of pyproject.toml's requirements for ``extras``, or pins outside their bounds."""
    problems = []
    for req in declared(extras, python):
        for need in [req, *extras_of(req)]:
            name = canonicalize_name(need.name)
            if name not in pins:
                problems.append(f"{need} (needed by [{','.join(extras)}]) is not in {lock}")
            elif not need.specifier.contains(pins[name][0], prereleases=True):
                problems.append(f"{lock} pins {name}=={pins[name][0]}, outside {need}")
    problems += [f"{lock}: {name} has no hash" for name, (_, hashes) in sorted(pins.items()) if not hashes]
    return problems


@pytest.mark.parametrize("lock", sorted(locks_made_by_the_script()))
def test_the_lock_pins_every_declared_dependency_within_its_bounds(lock: str) -> None:
    python, extras = locks_made_by_the_script()[lock]
    pins = read_lock(REPO / lock)
    problems = lock_problems(pins, lock, python, extras)
    assert not problems, "run requirements/lock.sh:\n" + "\n".join(problems)
    assert canonicalize_name("ptychopy") not in pins, f"{lock} pins the project itself"


def test_the_check_names_a_missing_dependency_an_out_of_bound_pin_and_a_missing_hash() -> None:
    pins = read_lock(REPO / "requirements" / "web.lock")
    broken = {**pins, "django": ("4.2.0", pins["django"][1]), "whitenoise": (pins["whitenoise"][0], [])}
    del broken["psycopg-binary"]  # added by psycopg[binary]
    del broken["numpy"]
    before = set(lock_problems(pins, "web.lock", "3.11", ["web", "epics"]))  # empty unless the lock is stale
    problems = [p for p in lock_problems(broken, "web.lock", "3.11", ["web", "epics"]) if p not in before]
    assert len(problems) == 4, problems
    assert problems[0] == "numpy>=1.26 (needed by [web,epics]) is not in web.lock"
    assert problems[1] == "web.lock pins django==4.2.0, outside Django<6,>=5.2"
    assert problems[2].startswith("psycopg-binary") and problems[2].endswith("is not in web.lock")
    assert problems[3] == "web.lock: whitenoise has no hash"
