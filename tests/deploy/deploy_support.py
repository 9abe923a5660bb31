"""Helpers for the static checks of the images and deployment files, with no container engine.

The Dockerfiles are parsed, and their build stage is replayed: the files each COPY takes from
the build context (the repository filtered through `.dockerignore`, as Docker would send it) are
staged in a scratch directory and the stage's exact `uv sync` commands run there, into a fresh
environment. What a service image would hold is then checked from outside any source tree.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("scheduler", "coordinator", "worker")
RUNTIME_VENV = "/app/.venv"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, its continuation lines joined."""

    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    """One `FROM` and the instructions that follow it."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.args):
                name, sep, value = token.partition("=")
                assert sep, f"line {instruction.line}: use ENV name=value, not {token!r}"
                values[name] = value
        return values

    def labels(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("LABEL"):
            for token in shlex.split(instruction.args):
                name, _, value = token.partition("=")
                values[name] = value
        return values


def parse_dockerfile(path: Path) -> list[Stage]:
    """Splits a Dockerfile into stages (comments dropped, continuations joined)."""
    stages: list[Stage] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if continued:
            continue
        keyword, _, args = " ".join(pending).partition(" ")
        pending = []
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{path}:{start}: instruction before FROM"
            stages[-1].instructions.append(instruction)
    return stages


def exec_form(args: str) -> list[str]:
    """The argv of a JSON-form (exec form) CMD, ENTRYPOINT or HEALTHCHECK CMD."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """Translates one .dockerignore pattern the way Docker's pattern matcher does."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out += "(.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + r"\Z")


def dockerignore_filter(text: str) -> Any:
    """Returns `included(path)` for a .dockerignore: the last pattern that matches the path or
    one of its parent directories decides, as in Docker."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((negated, _ignore_regex(pattern)))

    def included(path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        keep = True
        for negated, regex in rules:
            if any(regex.match(candidate) for candidate in candidates):
                keep = negated
        return keep

    return included


def make_build_context(target: Path) -> Path:
    """Copies what `docker build .` would send into `target`: the checkout's files (tracked, or
    untracked and not git-ignored) less those .dockerignore excludes."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    included = dockerignore_filter((ROOT / ".dockerignore").read_text())
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file() and included(name):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@dataclass(frozen=True)
class Replay:
    """The outcome of replaying one Dockerfile's build stage."""

    venv: Path
    syncs: list[list[str]]
    after_dependencies: list[str]


def _copy(args: str, context: Path, workdir: Path) -> None:
    *sources, dest = [t for t in shlex.split(args) if not t.startswith("--")]
    target = workdir / dest
    for source in sources:
        origin = context / source
        assert origin.exists(), (
            f"COPY {source}: not in the build context (untracked, or excluded by .dockerignore)"
        )
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True)
        else:
            into = target / origin.name if dest.endswith("/") or len(sources) > 1 else target
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, into)


def _installed_distributions(venv: Path) -> list[str]:
    return sorted(p.name for p in venv.glob("lib/python*/site-packages/*.dist-info"))


def replay_build(dockerfile: Path, context: Path, scratch: Path) -> Replay:
    """Runs the build stage's COPY and `uv sync` steps in `scratch`; returns the environment.

    The stage's own ENV applies, except that the environment goes into `scratch/venv`. The
    staged source tree is deleted afterwards, as the runtime image has none.
    """
    build = next(s for s in parse_dockerfile(dockerfile) if s.name == "build")
    venv = scratch / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(build.env())
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    tree = scratch / "tree"
    workdir = tree
    syncs: list[list[str]] = []
    after_dependencies: list[str] = []
    for instruction in build.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = tree / instruction.args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY" and "--from=" not in instruction.args:
            _copy(instruction.args, context, workdir)
        elif instruction.keyword == "RUN":
            command = re.sub(r"^(--\S+\s+)+", "", instruction.args)
            argv = shlex.split(command)
            assert argv[:2] == ["uv", "sync"], (
                f"{dockerfile}:{instruction.line}: the replay knows only `uv sync` in the build "
                f"stage, not {command!r}"
            )
            result = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True)
            assert result.returncode == 0, f"{command} failed:\n{result.stderr}"
            syncs.append(argv)
            if len(syncs) == 1:
                after_dependencies = _installed_distributions(venv)
    shutil.rmtree(tree)
    return Replay(venv, syncs, after_dependencies)


def package_version(member: str) -> str:
    """The version in packages/<member>/pyproject.toml."""
    data = tomllib.loads((ROOT / "packages" / member / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def workspace_members() -> list[str]:
    """The directory names of the workspace's members."""
    return sorted(p.parent.name for p in ROOT.glob("packages/*/pyproject.toml"))
