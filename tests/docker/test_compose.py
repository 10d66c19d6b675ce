"""docker/ checked without a Docker engine: the compose file's shape, that every command it or a Dockerfile
runs exists in this repository, that Dockerfiles copy files that exist, and that the environment variables
compose sets are the ones webapp/settings.py reads (and docs/deploy.md documents)."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
SETTINGS = REPO / "webapp" / "settings.py"

# Variables compose sets that are read by something other than webapp/settings.py, and by what.
READ_ELSEWHERE = {
    "CUDA_VISIBLE_DEVICES": "CUDA / CuPy (and the worker's GPU label)",
    "dramatiq_queue_prefetch": "Dramatiq's consumer (prefetch 1 for a one-thread GPU worker)",
    "EPICS_CA_AUTO_ADDR_LIST": "libca",
    "EPICS_CA_ADDR_LIST": "libca",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "compose.yaml has no services"
    return data


def settings_env_vars() -> set[str]:
    """Names webapp/settings.py reads: os.environ[...] / .get(...) and its typed reader env.<kind>("NAME", ...)."""
    tree = ast.parse(SETTINGS.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = ast.unparse(node.func)
            if func in {"os.environ.get", "os.getenv"} or func.startswith(("_env", "env.")):
                names.add(str(node.args[0].value))
        if (isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ"
                and isinstance(node.slice, ast.Constant)):
            names.add(str(node.slice.value))
    return names


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command_argv(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    if cmd is None:
        return []
    return [str(c) for c in cmd] if isinstance(cmd, list) else shlex.split(str(cmd))


def assert_runnable(argv: list[str], where: str) -> None:
    """The program an image runs exists in this repository (or is a dependency's console script)."""
    assert argv, f"{where}: no command"
    prog, args = Path(argv[0]).name, argv[1:]
    if prog in {"python", "python3"}:
        if args[:1] == ["-c"]:
            compile(args[1], f"<{where}>", "exec")  # inline code: it must at least be valid Python
        elif args[:1] == ["-m"]:
            module = args[1]
            rel = Path(*module.split("."))
            assert (REPO / rel / "__main__.py").exists() or (REPO / f"{rel}.py").exists(), (
                f"{where}: `python -m {module}` but neither {rel}/__main__.py nor {rel}.py exists")
        else:
            assert (REPO / args[0]).exists(), f"{where}: `python {args[0]}` but {args[0]} does not exist"
    elif prog == "daphne":
        target = args[-1]
        module, _, attr = target.partition(":")
        path = REPO / Path(*module.split(".")).with_suffix(".py")
        assert path.exists(), f"{where}: daphne serves {target} but {path.relative_to(REPO)} does not exist"
        assert re.search(rf"^{attr}\s*[:=]", path.read_text(), re.MULTILINE), f"{where}: no `{attr}` in {path}"
        deps = (REPO / "pyproject.toml").read_text()
        assert '"daphne' in deps, f"{where}: daphne is not a dependency in pyproject.toml"
    elif prog in {"redis-server", "postgres", "pg_isready", "redis-cli"}:
        pass  # the official images' own programs
    else:
        pytest.fail(f"{where}: unknown program {prog!r}")


def test_compose_has_the_expected_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "web", "epics-bridge"):
        assert name in services, f"compose.yaml lacks the {name} service"
    assert str(services["postgres"]["image"]).startswith("postgres:15")
    assert str(services["redis"]["image"]).startswith("redis:")
    assert command_argv(services["web"])[0] == "daphne"
    bridge = command_argv(services["epics-bridge"])
    assert bridge[1:3] == ["-m", "epics_bridge"], bridge
    for name, svc in services.items():
        if svc.get("restart") != "no":  # every long-running service says how it is healthy
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_each_healthcheck_probes_its_own_service(compose: dict[str, Any]) -> None:
    """The bridge runs in the web image, whose HEALTHCHECK probes port 8000: its own check must replace it."""
    services = compose["services"]
    assert services["web"]["healthcheck"]["test"][1:] == ["python", "docker/healthcheck.py", "web"]
    assert services["worker-gpu0"]["healthcheck"]["test"][1:] == ["python", "docker/healthcheck.py", "worker"]
    bridge = services["epics-bridge"]
    assert bridge["healthcheck"]["test"][1:5] == ["python", "-m", "epics_bridge", "health"]
    assert bridge["healthcheck"]["test"][-1] == command_argv(bridge)[-1], "the check reads the bridge's config"


def test_gpu_workers_one_process_per_gpu(compose: dict[str, Any]) -> None:
    services = compose["services"]
    workers = {n: s for n, s in services.items() if command_argv(s)[-2:] == ["-m", "webapp.worker"]}
    assert len(workers) >= 2, f"expected at least two GPU worker services, found {sorted(workers)}"
    host_gpus: list[str] = []
    for name, svc in workers.items():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, f"{name}: one GPU per worker process"
        dev = devices[0]
        assert "gpu" in dev["capabilities"], f"{name}: the reservation is not a GPU"
        assert len(dev["device_ids"]) == 1, f"{name}: exactly one device id"
        host_gpus.append(str(dev["device_ids"][0]))
        env = env_of(svc)
        assert env.get("CUDA_VISIBLE_DEVICES", "") != "", f"{name}: CUDA_VISIBLE_DEVICES is not set"
        assert env.get("dramatiq_queue_prefetch") == "1", f"{name}: prefetch must be 1 for a one-thread worker"
        assert "worker.Dockerfile" in str(svc.get("build", {}).get("dockerfile", "")), name
    assert len(set(host_gpus)) == len(host_gpus), f"two workers share a GPU: {host_gpus}"


def test_every_command_exists_in_this_repo(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        argv = command_argv(svc)
        if argv:
            assert_runnable(argv, f"compose service {name}")
        health = svc.get("healthcheck", {}).get("test")
        if isinstance(health, list) and health and health[0] == "CMD":
            assert_runnable(health[1:], f"{name}'s healthcheck")
    for dockerfile in ("web.Dockerfile", "worker.Dockerfile"):
        text = (DOCKER / dockerfile).read_text()
        cmd = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
        assert cmd, f"{dockerfile} has no exec-form CMD"
        assert_runnable(yaml.safe_load(cmd.group(1)), f"{dockerfile} CMD")


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("dockerfile", ["web.Dockerfile", "worker.Dockerfile"])
def test_dockerfiles_copy_files_that_exist(dockerfile: str) -> None:
    for word, rest in _dockerfile_instructions(DOCKER / dockerfile):
        if word in {"COPY", "ADD"}:
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            for src in parts[:-1]:
                assert (REPO / src).exists(), f"{dockerfile}: COPY {src} but it is not in the repository"


def test_images_are_built_as_specified() -> None:
    web = dict(_dockerfile_instructions(DOCKER / "web.Dockerfile"))
    assert web["FROM"].startswith("python:3.11-slim"), web["FROM"]
    worker_text = (DOCKER / "worker.Dockerfile").read_text()
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)", worker_text, re.MULTILINE)
    assert base and re.match(r"nvidia/cuda:13\.\d+\.\d+-runtime-", base.group(1)), "worker base: CUDA 13 runtime"
    # what each image installs (the lock's extras, cupy-cuda13x in the worker's) is tests/docker/test_lock.py's


def test_compose_env_is_read_by_settings(compose: dict[str, Any]) -> None:
    read = settings_env_vars()
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS"} <= read, f"settings.py reads {read}"
    elsewhere_sources = "\n".join(p.read_text() for p in (REPO / "epics_bridge").rglob("*.py"))
    for name, svc in compose["services"].items():
        if name in {"postgres", "redis"}:
            continue
        for var in env_of(svc):
            if var in read or var in READ_ELSEWHERE:
                continue
            if var.startswith("EPICS_BRIDGE__"):  # EPICS_BRIDGE__<SECTION>__<KEY> overrides a TOML key
                from epics_bridge.config import ConfigError, load_config

                try:  # the loader rejects unknown sections and keys, so a typo in compose.yaml fails here
                    load_config(REPO / "epics_bridge" / "examples" / "beamline.toml", {var: env_of(svc)[var]})
                except ConfigError as exc:
                    raise AssertionError(f"{name} sets {var}: {exc}") from None
                continue
            assert var in elsewhere_sources, f"{name} sets {var}, which nothing in this repository reads"


def test_production_settings_are_all_set(compose: dict[str, Any]) -> None:
    required = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "PTYCHOPY_DATA_ROOTS",
                "PTYCHOPY_RESULTS_DIR"}
    for name, svc in compose["services"].items():
        if name in {"postgres", "redis"}:
            continue
        missing = required - set(env_of(svc))
        assert not missing, f"{name} lacks {sorted(missing)}"
        if name != "migrate":
            assert "restart" in svc, f"{name} has no restart policy"
    results = {name for name, svc in compose["services"].items()
               if any(str(v).startswith("results:") for v in svc.get("volumes", []))}
    assert {"web", "worker-gpu0", "worker-gpu1"} <= results, f"the results volume is shared by {results}"
    assert "results" in compose.get("volumes", {}) and "pgdata" in compose.get("volumes", {})
    if "PTYCHOPY_UPLOADS_DIR" in settings_env_vars():  # the web writes uploads, the workers read them
        uploads = {name for name, svc in compose["services"].items()
                   if any(str(v).startswith("uploads:") for v in svc.get("volumes", []))}
        assert {"web", "worker-gpu0", "worker-gpu1"} <= uploads, f"the uploads volume is shared by {uploads}"


def test_deploy_doc_lists_every_setting() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text()
    missing = sorted(v for v in settings_env_vars() if f"`{v}`" not in doc)
    assert not missing, f"docs/deploy.md does not document {missing}"


def test_the_settings_read_the_environment_only_through_the_typed_reader() -> None:
    """Every value comes through webapp.envconfig.Env (typed, named errors); what it read at import is a part of
    what the source scan above finds, so the documentation check cannot miss a variable read indirectly."""
    from webapp import settings as loaded

    source = SETTINGS.read_text()
    assert "os.environ.get(" not in source and "os.getenv(" not in source, "settings.py reads os.environ directly"
    assert set(loaded.env.read) <= settings_env_vars(), sorted(set(loaded.env.read) - settings_env_vars())
    assert {"EMAIL_URL", "EMAIL_HOST", "PTYCHOPY_FRAME_RATE_HZ"} <= set(loaded.env.read)
