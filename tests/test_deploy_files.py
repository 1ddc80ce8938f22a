"""Static checks of the deployment files: compose.yaml and docker/*.Dockerfile.

There is no Docker engine on the dev machine, so the images are never built here. These
tests parse the files instead and check that they agree with each other and with the
project: the shared volume and Redis URL in compose, the GPU reservation, torch pinned as in
pyproject.toml, nvdiffrast built from source, and that every `avatars ...` command the
images and compose run (ENTRYPOINT + CMD, compose `command`, RUN steps) resolves to a real
command and options of the click CLI behind the `avatars` entry point (service/cli.py).

The Dockerfile parser and the CLI resolver are tested on their own with inline samples
(the `test_parser_*` / `test_resolve_*` tests), so they do not depend on the real files.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCKERFILES = {
    "gateway": ROOT / "docker" / "gateway.Dockerfile",
    "worker": ROOT / "docker" / "worker.Dockerfile",
}
# Which image each compose service must be built from.
SERVICE_IMAGE = {"gateway": "gateway", "fit-worker": "worker", "inpaint-worker": "worker"}
APP_SERVICES = tuple(SERVICE_IMAGE)


# ---------------------------------------------------------------------------------------
# Dockerfile parser
# ---------------------------------------------------------------------------------------

# Instructions that take `--flag[=value]` options before their arguments.
_FLAG_KEYWORDS = {"FROM", "RUN", "COPY", "ADD", "HEALTHCHECK"}
_HEREDOC_KEYWORDS = {"RUN", "COPY", "ADD"}
_DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$")
_HEREDOC = re.compile(r"(?:^|\s)<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VAR = re.compile(
    r"\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)"
)


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    args: str  # everything after the keyword and its --flags, continuations joined
    flags: tuple[str, ...] = ()  # e.g. ("--mount=type=cache,target=/root/.cache/pip",)
    line: int = 0  # 1-based line of the keyword
    heredocs: tuple[str, ...] = ()  # bodies of `<<EOF` heredocs (RUN/COPY/ADD)

    def flag(self, name: str) -> str | None:
        """Value of `--name=value` (or "" for a bare `--name`), None if absent."""
        for f in self.flags:
            key, _, value = f[2:].partition("=")
            if key == name:
                return value
        return None

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON-array ("exec") form as a list, None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None  # Docker falls back to the shell form for invalid JSON
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        return None

    @property
    def argv(self) -> list[str]:
        """What Docker runs for CMD/ENTRYPOINT/RUN: exec form as is, shell form via sh -c."""
        form = self.exec_form
        return form if form is not None else ["/bin/sh", "-c", self.args]


@dataclass
class Stage:
    index: int
    base: str  # FROM image after ARG expansion (or the name of an earlier stage)
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)
    parent: Stage | None = None  # the earlier stage this one is FROM, if any

    def chain(self) -> list[Stage]:
        """This stage and the in-file stages it builds on, root first."""
        stages, stage = [], self
        while stage is not None:
            stages.append(stage)
            stage = stage.parent
        return stages[::-1]

    @property
    def external_base(self) -> str:
        return self.chain()[0].base

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    global_args: dict[str, str]  # ARGs declared before the first FROM (with defaults)
    stages: list[Stage]
    directives: dict[str, str]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def expand(text: str, env: dict[str, str]) -> str:
    """Docker-style $VAR / ${VAR} / ${VAR:-default} / ${VAR:+alt} substitution.

    Unknown variables are left as written (they may come from the base image, e.g. $PATH).
    """

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "\\$":
            return "$"
        name, op, word = m.group(1) or m.group(4), m.group(2), m.group(3)
        value = env.get(name)
        if op == "-":
            return value if value else word
        if op == "+":
            return word if value else ""
        return value if value is not None else m.group(0)

    return _VAR.sub(sub, text)


def parse_assignments(text: str, keyword: str) -> dict[str, str | None]:
    """ENV/ARG arguments: `K=V K2="v w"`, legacy `ENV K value`, or bare `ARG NAME`."""
    tokens = shlex.split(text, posix=True)
    if keyword == "ENV" and tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    result: dict[str, str | None] = {}
    for token in tokens:
        key, eq, value = token.partition("=")
        result[key] = value if eq else None
    return result


def parse_dockerfile(text: str) -> Dockerfile:
    """Parse Dockerfile text into instructions and stages.

    Handles parser directives (`# syntax=`, `# escape=`), comments (also inside line
    continuations), line continuations, `--flags`, heredocs, JSON-array vs shell forms,
    global ARGs and their expansion in FROM, and `FROM <earlier stage>`.
    """
    lines = text.splitlines()
    directives: dict[str, str] = {}
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i].strip())
        if not m or m.group(1).lower() in directives:
            break
        directives[m.group(1).lower()] = m.group(2)
        i += 1
    escape = directives.get("escape", "\\")
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")

    instructions: list[Instruction] = []
    while i < len(lines):
        raw = lines[i]
        start = i + 1
        i += 1
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        logical = raw
        while continuation.search(logical):
            logical = continuation.sub("", logical)
            # Comment and empty lines inside a continuation are dropped, as Docker does.
            while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                i += 1
            if i >= len(lines):
                break
            logical += lines[i]
            i += 1
        m = re.match(r"\s*(\S+)\s*(.*)$", logical, re.DOTALL)
        keyword, rest = m.group(1).upper(), m.group(2)
        flags: list[str] = []
        if keyword in _FLAG_KEYWORDS:
            while rest.startswith("--"):
                flag, _, rest = rest.partition(" ")
                flags.append(flag)
                rest = rest.lstrip()
        heredocs: list[str] = []
        if keyword in _HEREDOC_KEYWORDS:
            for strip_tabs, _, word in _HEREDOC.findall(rest):
                body: list[str] = []
                while i < len(lines):
                    line = lines[i]
                    i += 1
                    if (line.lstrip("\t") if strip_tabs else line) == word:
                        break
                    body.append(line.lstrip("\t") if strip_tabs else line)
                heredocs.append("\n".join(body))
        instructions.append(
            Instruction(keyword, rest.strip(), tuple(flags), start, tuple(heredocs))
        )

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            parts = ins.args.split()
            base = expand(parts[0], global_args)
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else None
            parent = next((s for s in stages if s.name and s.name.lower() == base.lower()), None)
            stages.append(Stage(len(stages), base, name, parent=parent))
        elif not stages:
            if ins.keyword != "ARG":
                raise ValueError(f"line {ins.line}: {ins.keyword} before the first FROM")
            for key, value in parse_assignments(ins.args, "ARG").items():
                global_args[key] = value if value is not None else ""
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise ValueError("no FROM instruction")
    return Dockerfile(instructions, global_args, stages, directives)


def stage_env(df: Dockerfile, stage: Stage, upto: Instruction | None = None) -> dict[str, str]:
    """ARG and ENV values visible in `stage` (and the in-file stages it builds on) before
    `upto` (or at the end of the stage). Global ARGs are visible only when redeclared."""
    env: dict[str, str] = {}
    for st in stage.chain():
        for ins in st.instructions:
            if ins is upto:
                return env
            if ins.keyword in ("ARG", "ENV"):
                for key, value in parse_assignments(ins.args, ins.keyword).items():
                    if value is None:  # bare ARG: default from the global ARG, if any
                        value = env.get(key, df.global_args.get(key, ""))
                    env[key] = expand(value, env)
    return env


_UNKNOWN = ["<from base image>"]


def effective_command(stage: Stage) -> tuple[list[str] | None, list[str] | None]:
    """(ENTRYPOINT, CMD) of an image built from `stage`, with Docker's rule that setting
    ENTRYPOINT in a stage clears a CMD inherited from the base. Values inherited from an
    external base image are unknown and returned as `_UNKNOWN`."""
    entrypoint: list[str] | None = _UNKNOWN
    cmd: list[str] | None = _UNKNOWN
    for st in stage.chain():
        cmd_set = False
        entrypoint_set = False
        for ins in st.instructions:
            if ins.keyword == "CMD":
                cmd, cmd_set = ins.argv, True
            elif ins.keyword == "ENTRYPOINT":
                entrypoint, entrypoint_set = ins.argv, True
        if entrypoint_set and not cmd_set:
            cmd = None
    return entrypoint, cmd


def container_argv(
    stage: Stage, command: str | list[str] | None = None, entrypoint: str | list[str] | None = None
) -> list[str]:
    """argv of a container: image ENTRYPOINT + CMD, with compose `command`/`entrypoint`
    overrides (a compose entrypoint also drops the image's CMD)."""

    def as_list(value: str | list[str]) -> list[str]:
        return shlex.split(value) if isinstance(value, str) else list(value)

    image_entrypoint, image_cmd = effective_command(stage)
    if entrypoint is not None:
        image_entrypoint, image_cmd = as_list(entrypoint), None
    if command is not None:
        image_cmd = as_list(command)
    if image_entrypoint is _UNKNOWN or image_cmd is _UNKNOWN:
        raise AssertionError(
            f"stage {stage.name or stage.index} inherits ENTRYPOINT/CMD from its base image "
            f"{stage.external_base!r}: set ENTRYPOINT explicitly"
        )
    return [*(image_entrypoint or []), *(image_cmd or [])]


_OPERATORS = {"&&", "||", ";", "|", "&", ";;"}


def shell_commands(script: str) -> list[tuple[dict[str, str], list[str]]]:
    """Split a shell script into simple commands: [(inline VAR=value assignments, argv)].

    Good enough for Dockerfile RUN lines: splits on && || ; | & and newlines, honours
    quotes; does not look inside $(...) or subshells.
    """
    commands: list[tuple[dict[str, str], list[str]]] = []
    for line in script.splitlines() or [""]:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = ""
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token in _OPERATORS:
                env: dict[str, str] = {}
                while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", current[0]):
                    key, _, value = current.pop(0).partition("=")
                    env[key] = value
                if current or env:
                    commands.append((env, current))
                current = []
            else:
                current.append(token)
    return commands


@dataclass
class Run:
    stage: Stage
    instruction: Instruction
    env: dict[str, str]  # ARG/ENV visible to this RUN

    @property
    def script(self) -> str:
        return "\n".join([self.instruction.args, *self.instruction.heredocs])

    @property
    def commands(self) -> list[tuple[dict[str, str], list[str]]]:
        """Simple commands, with ARG/ENV (and inline assignments) expanded."""
        result = []
        for inline, argv in shell_commands(self.script):
            env = {**self.env, **{k: expand(v, self.env) for k, v in inline.items()}}
            result.append((env, [expand(a, env) for a in argv]))
        return result


def runs(df: Dockerfile, stages: list[Stage] | None = None) -> list[Run]:
    result = []
    for stage in stages if stages is not None else df.stages:
        for ins in stage.instructions:
            if ins.keyword == "RUN":
                result.append(Run(stage, ins, stage_env(df, stage, upto=ins)))
    return result


def pip_install_args(argv: list[str]) -> list[str] | None:
    """The arguments after `install` for pip / pip3 / python -m pip / uv pip, else None."""
    if not argv:
        return None
    name = argv[0].rsplit("/", 1)[-1]
    if name in ("pip", "pip3") and argv[1:2] == ["install"]:
        return argv[2:]
    if re.fullmatch(r"python(3(\.\d+)?)?", name) and argv[1:4] == ["-m", "pip", "install"]:
        return argv[4:]
    if name == "uv" and argv[1:3] == ["pip", "install"]:
        return argv[3:]
    return None


def option_value(args: list[str], *names: str) -> str | None:
    for k, arg in enumerate(args):
        for name in names:
            if arg == name and k + 1 < len(args):
                return args[k + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


# ---------------------------------------------------------------------------------------
# CLI resolution (click)
# ---------------------------------------------------------------------------------------


@dataclass
class Resolved:
    path: tuple[str, ...]  # e.g. ("models", "prepare")
    command: click.Command
    params: dict


def resolve_cli(cli: click.Command, args: list[str], prog: str = "avatars") -> Resolved:
    """Resolve argv (without the program name) the way click would run it, without running
    anything: walks groups to the leaf command and parses its options and arguments.
    Raises click.UsageError (NoSuchOption, BadParameter, ...) when the CLI would reject it."""
    ctx = cli.make_context(prog, list(args))
    command, path = cli, []
    while isinstance(command, click.Group):
        protected = getattr(ctx, "_protected_args", None)  # click >= 8.2
        if protected is None:
            protected = ctx.protected_args
        rest = [*protected, *ctx.args]
        if not rest:
            raise click.UsageError(f"'{' '.join([prog, *path])}' needs a subcommand", ctx)
        name, sub, rest = command.resolve_command(ctx, rest)
        path.append(name)
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return Resolved(tuple(path), command, dict(ctx.params))


def option_names(command: click.Command) -> set[str]:
    return {
        opt
        for p in command.params
        if isinstance(p, click.Option)
        for opt in (*p.opts, *p.secondary_opts)
    }


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def dockerfiles() -> dict[str, Dockerfile]:
    return {name: parse_dockerfile(path.read_text()) for name, path in DOCKERFILES.items()}


@pytest.fixture(scope="module")
def cli() -> click.Command:
    """The click object behind the `avatars` console script (pyproject [project.scripts])."""
    target = PYPROJECT["project"]["scripts"]["avatars"]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.fail(
            f"cannot import {module_name} for the `avatars` entry point ({target}): {exc}. "
            "Expected a click Group `main` in service/cli.py with commands `serve` "
            "(--host, --port), `worker` (--queues) and a group `models` with `prepare`."
        )
    command = getattr(module, attr, None)
    assert isinstance(command, click.Group), f"{target} must be a click Group, got {command!r}"
    return command


def env_dict(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def volume_mounts(service: dict) -> list[tuple[str | None, str, str]]:
    """[(type, source, target)] for short ("src:dst[:mode]") and long volume syntax."""
    mounts = []
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) == 1:
                mounts.append(("volume", None, parts[0]))
                continue
            source, target = parts[0], parts[1]
            kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
            mounts.append((kind, source, target))
        else:
            mounts.append((v.get("type", "volume"), v.get("source"), v["target"]))
    return mounts


def container_ports(service: dict) -> set[int]:
    ports = set()
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            ports.add(int(p["target"]))
        else:
            ports.add(int(str(p).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def service_stage(service: dict, dockerfiles: dict[str, Dockerfile]) -> Stage:
    build = service["build"]
    dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
    context = build.get("context", ".") if isinstance(build, dict) else build
    path = (ROOT / context / dockerfile).resolve()
    name = next(n for n, p in DOCKERFILES.items() if p.resolve() == path)
    df = dockerfiles[name]
    target = build.get("target") if isinstance(build, dict) else None
    return df.stage(target) if target else df.final


# ---------------------------------------------------------------------------------------
# The parser and resolver on their own
# ---------------------------------------------------------------------------------------

SAMPLE_DOCKERFILE = r"""# syntax=docker/dockerfile:1.7
# A comment that is not a directive.
ARG BASE=python:3.11-slim
ARG TORCH_VERSION=2.13.0

FROM ${BASE} AS build
ARG TORCH_VERSION
ENV A=1 \
    B="two words" \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update \
    # comment lines inside a continuation are dropped
    && apt-get install -y --no-install-recommends \

       libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/root/.cache/pip pip install "torch==${TORCH_VERSION}" \
      --index-url https://download.pytorch.org/whl/cpu
RUN <<EOF
set -e
X=1 avatars models prepare
EOF
CMD ["python"]

FROM build AS final
COPY --from=build --chown=app:app /opt/venv /opt/venv
USER app
HEALTHCHECK --interval=30s --timeout=5s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"]
ENTRYPOINT ["avatars", "worker"]
"""


def test_parser_instructions_stages_and_forms():
    df = parse_dockerfile(SAMPLE_DOCKERFILE)
    assert df.directives == {"syntax": "docker/dockerfile:1.7"}
    assert df.global_args == {"BASE": "python:3.11-slim", "TORCH_VERSION": "2.13.0"}
    assert [k.keyword for k in df.instructions] == [
        "ARG", "ARG", "FROM", "ARG", "ENV", "RUN", "RUN", "RUN", "CMD",
        "FROM", "COPY", "USER", "HEALTHCHECK", "ENTRYPOINT",
    ]  # fmt: skip
    build, final = df.stages
    assert (build.base, build.name) == ("python:3.11-slim", "build")
    assert (final.base, final.name, final.parent) == ("build", "final", build)
    assert final.external_base == "python:3.11-slim"

    apt = build.all("RUN")[0]
    assert apt.line == 11
    assert "comment" not in apt.args
    assert " ".join(apt.args.split()) == (
        "apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 "
        "&& rm -rf /var/lib/apt/lists/*"
    )
    pip = build.all("RUN")[1]
    assert pip.flags == ("--mount=type=cache,target=/root/.cache/pip",)
    assert pip.flag("mount") == "type=cache,target=/root/.cache/pip"
    assert pip.args.startswith('pip install "torch==${TORCH_VERSION}"')
    heredoc = build.all("RUN")[2]
    assert heredoc.args == "<<EOF"
    assert heredoc.heredocs == ("set -e\nX=1 avatars models prepare",)

    copy = final.all("COPY")[0]
    assert copy.flag("from") == "build" and copy.flag("chown") == "app:app"
    assert copy.args == "/opt/venv /opt/venv"
    health = final.all("HEALTHCHECK")[0]
    assert health.flag("interval") == "30s"
    assert health.args.startswith('CMD ["python", "-c"')

    assert build.all("CMD")[0].exec_form == ["python"]
    assert final.all("ENTRYPOINT")[0].exec_form == ["avatars", "worker"]
    assert apt.exec_form is None and apt.argv[:2] == ["/bin/sh", "-c"]


def test_parser_env_args_and_expansion():
    df = parse_dockerfile(SAMPLE_DOCKERFILE)
    build = df.stages[0]
    env = stage_env(df, build)
    assert env["TORCH_VERSION"] == "2.13.0"  # redeclared global ARG gets its default
    assert env["A"] == "1" and env["B"] == "two words"
    assert env["PATH"] == "/opt/venv/bin:$PATH"  # unknown variables stay as written
    assert "BASE" not in env  # global ARG not redeclared in the stage
    assert expand("${X:-dflt}-${Y:+alt}-$Z-\\$Z", {"Y": "1", "Z": "z"}) == "dflt-alt-z-$Z"

    (pip,) = [r for r in runs(df) if r.instruction.flags]
    ((_, argv),) = pip.commands
    assert pip_install_args(argv) == [
        "torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu",
    ]  # fmt: skip
    assert option_value(argv, "--index-url") == "https://download.pytorch.org/whl/cpu"
    heredoc = runs(df)[-1]
    assert heredoc.commands[-1] == ({**heredoc.env, "X": "1"}, ["avatars", "models", "prepare"])


def test_parser_shell_commands():
    script = """cd /x && A=1 B="b c" make -j2 install; echo 'a && b' | tee f || true"""
    assert shell_commands(script) == [
        ({}, ["cd", "/x"]),
        ({"A": "1", "B": "b c"}, ["make", "-j2", "install"]),
        ({}, ["echo", "a && b"]),
        ({}, ["tee", "f"]),
        ({}, ["true"]),
    ]
    assert pip_install_args(["python", "-m", "pip", "install", ".[gpu]"]) == [".[gpu]"]
    assert pip_install_args(["pip", "show", "x"]) is None


def test_parser_entrypoint_cmd_rules():
    df = parse_dockerfile(SAMPLE_DOCKERFILE)
    build, final = df.stages
    # `build` sets only CMD: ENTRYPOINT comes from the base image, unknown here.
    assert effective_command(build) == (_UNKNOWN, ["python"])
    with pytest.raises(AssertionError, match="ENTRYPOINT"):
        container_argv(build)
    # `final` sets ENTRYPOINT, which clears the CMD inherited from `build`.
    assert effective_command(final) == (["avatars", "worker"], None)
    assert container_argv(final) == ["avatars", "worker"]
    assert container_argv(final, command=["--queues", "fit"]) == [
        "avatars",
        "worker",
        "--queues",
        "fit",
    ]
    assert container_argv(final, command="--queues 'fit,inpaint'")[-1] == "fit,inpaint"
    assert container_argv(final, command="x", entrypoint=["sh"]) == ["sh", "x"]

    shell = parse_dockerfile('FROM scratch\nENTRYPOINT ["a"]\nCMD echo $HOME\n').final
    assert container_argv(shell) == ["a", "/bin/sh", "-c", "echo $HOME"]
    with pytest.raises(ValueError):
        parse_dockerfile("RUN true\n")


def _fake_cli(calls: list[str]) -> click.Group:
    @click.group()
    def main():
        calls.append("main")

    @main.command()
    @click.option("--host", default="127.0.0.1")
    @click.option("--port", type=int, default=8000)
    def serve(host, port):
        calls.append("serve")

    @main.command()
    @click.option("--queues", required=True)
    def worker(queues):
        calls.append("worker")

    @main.group()
    def models():
        calls.append("models")

    @models.command()
    def prepare():
        calls.append("prepare")

    return main


def test_resolve_cli_walks_groups_without_running_anything():
    calls: list[str] = []
    fake = _fake_cli(calls)
    serve = resolve_cli(fake, ["serve", "--host", "0.0.0.0", "--port", "8000"])
    assert serve.path == ("serve",) and serve.params == {"host": "0.0.0.0", "port": 8000}
    assert {"--host", "--port"} <= option_names(serve.command)
    assert resolve_cli(fake, ["worker", "--queues=fit"]).params == {"queues": "fit"}
    assert resolve_cli(fake, ["models", "prepare"]).path == ("models", "prepare")
    assert calls == []


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--workers", "2"],  # unknown option
        ["serve", "--port", "http"],  # bad value
        ["serve", "extra"],  # unexpected argument
        ["worker"],  # missing required option
        ["models"],  # group without a subcommand
        ["models", "download"],  # unknown subcommand
        ["fit"],  # unknown command
        [],
    ],
)
def test_resolve_cli_rejects_what_click_would_reject(args):
    with pytest.raises(click.UsageError):
        resolve_cli(_fake_cli([]), args)


# ---------------------------------------------------------------------------------------
# compose.yaml
# ---------------------------------------------------------------------------------------


def test_compose_has_the_four_services(compose):
    assert {"redis", "gateway", "fit-worker", "inpaint-worker"} <= set(compose["services"])


def test_compose_services_build_the_right_dockerfiles(compose):
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        build = service["build"]
        context = ROOT / (build.get("context", ".") if isinstance(build, dict) else build)
        dockerfile = context / (
            build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
        )
        assert context.is_dir(), f"{name}: build context {context} missing"
        assert dockerfile.is_file(), f"{name}: build.dockerfile {dockerfile} missing"
        assert context.resolve() == ROOT, f"{name}: the Dockerfiles expect the repo root as context"
    for name, image in SERVICE_IMAGE.items():
        build = compose["services"][name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILES[
            image
        ].resolve()


def test_app_services_share_the_data_volume(compose):
    declared = compose.get("volumes") or {}
    data_dirs = {env_dict(compose["services"][s]).get("AVATARS_DATA_DIR") for s in APP_SERVICES}
    assert len(data_dirs) == 1 and None not in data_dirs, f"AVATARS_DATA_DIR differs: {data_dirs}"
    (data_dir,) = data_dirs
    sources = set()
    for name in APP_SERVICES:
        mounts = [m for m in volume_mounts(compose["services"][name]) if m[2] == data_dir]
        assert len(mounts) == 1, f"{name}: nothing (or several things) mounted at {data_dir}"
        kind, source, _ = mounts[0]
        assert kind == "volume" and source, f"{name}: {data_dir} must be a named volume"
        sources.add(source)
    assert sources == {"avatar-data"}, f"services mount different volumes at {data_dir}: {sources}"
    assert "avatar-data" in declared, "avatar-data must be declared in top-level volumes"
    assert "redis-data" in declared
    assert ("volume", "redis-data", "/data") in volume_mounts(compose["services"]["redis"])


def test_redis_url_points_at_the_redis_service(compose):
    services = compose["services"]
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    command = redis["command"]
    command = shlex.split(command) if isinstance(command, str) else command
    assert option_value(command, "--appendonly") == "yes"
    urls = set()
    for name in APP_SERVICES:
        url = env_dict(services[name]).get("AVATARS_REDIS_URL")
        assert url, f"{name}: AVATARS_REDIS_URL not set"
        parsed = urlparse(url)
        assert parsed.scheme in ("redis", "rediss"), url
        assert parsed.hostname in services, f"{name}: {url} does not name a compose service"
        assert services[parsed.hostname]["image"].startswith("redis"), url
        assert (parsed.port or 6379) == 6379, url
        urls.add(url)
    assert len(urls) == 1, f"services use different Redis URLs: {urls}"


def test_app_services_wait_for_healthy_redis(compose):
    for name in APP_SERVICES:
        depends = compose["services"][name].get("depends_on")
        assert (
            isinstance(depends, dict)
            and depends.get("redis", {}).get("condition") == "service_healthy"
        ), name


def test_inpaint_worker_reserves_an_nvidia_gpu(compose):
    devices = compose["services"]["inpaint-worker"]["deploy"]["resources"]["reservations"][
        "devices"
    ]
    assert any(
        d.get("driver") == "nvidia"
        and "gpu" in d.get("capabilities", [])
        and (d.get("count") or d.get("device_ids"))
        for d in devices
    ), devices
    for name in APP_SERVICES:  # `--scale` cannot work with fixed names
        assert "container_name" not in compose["services"][name], name


def test_gateway_port_matches_its_image(compose, dockerfiles):
    stage = dockerfiles["gateway"].final
    exposed = {int(p.split("/")[0]) for ins in stage.all("EXPOSE") for p in ins.args.split()}
    argv = container_argv(stage, compose["services"]["gateway"].get("command"))
    port = int(option_value(argv, "--port"))
    assert port in exposed
    assert port in container_ports(compose["services"]["gateway"])
    (health,) = stage.all("HEALTHCHECK")
    assert f":{port}/healthz" in health.args


# ---------------------------------------------------------------------------------------
# Dockerfiles
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_basics(image, dockerfiles):
    df = dockerfiles[image]
    assert df.instructions and df.stages
    for stage in df.stages:
        assert stage.base and "$" not in stage.base, f"FROM {stage.base!r} not resolved"
    final = df.final
    users = [i.args.split(":")[0] for st in final.chain() for i in st.all("USER")]
    assert users and users[-1] not in ("root", "0"), f"{image}: final image must run as non-root"
    for ins in (*final.all("ENTRYPOINT"), *final.all("CMD")):
        assert ins.exec_form is not None, f"{image}: line {ins.line}: use the exec (JSON) form"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_context_filter(image):
    """<name>.Dockerfile.dockerignore is an allowlist keeping .venv/.git out of the context."""
    ignore = DOCKERFILES[image].with_name(DOCKERFILES[image].name + ".dockerignore")
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "expected an allowlist: `*` first, then `!path` entries"
    allowed = {p[1:].strip("/") for p in patterns if p.startswith("!")}
    packages = {
        p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert {"pyproject.toml", *packages} <= allowed, allowed
    for ins in parse_dockerfile(DOCKERFILES[image].read_text()).instructions:
        if ins.keyword in ("COPY", "ADD") and ins.flag("from") is None:
            for source in shlex.split(ins.args)[:-1]:
                top = source.strip("./").split("/")[0].rstrip("*")
                assert top == "" or top in allowed, f"line {ins.line}: {source} is excluded"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_both_images_use_the_same_app_uid(image, dockerfiles):
    """The gateway and the workers write to the same volume: same numeric user."""

    def uid(df: Dockerfile) -> str:
        for run in runs(df, df.final.chain()):
            for _, argv in run.commands:
                if argv and argv[0] == "useradd":
                    return option_value(argv, "--uid", "-u")
        raise AssertionError("no useradd in the final stage")

    uids = {name: uid(df) for name, df in dockerfiles.items()}
    assert uids[image] not in (None, "0")
    assert len(set(uids.values())) == 1, uids


def _torch_installs(df: Dockerfile) -> list[tuple[Stage, str, str | None]]:
    found = []
    for run in runs(df):
        for _, argv in run.commands:
            args = pip_install_args(argv)
            if args is None:
                continue
            for arg in args:
                m = re.fullmatch(r"torch==(\S+)", arg)
                if m:
                    found.append((run.stage, m.group(1), option_value(args, "--index-url", "-i")))
    return found


def _project_torch_pin() -> str:
    (pin,) = [d for d in PYPROJECT["project"]["dependencies"] if re.match(r"torch\s*==", d)]
    return pin.split("==", 1)[1].strip()


def _project_installs(df: Dockerfile, stages: list[Stage]) -> list[list[str]]:
    """pip install arguments that install the project itself (`.` or `.[extras]`)."""
    found = []
    for run in runs(df, stages):
        for _, argv in run.commands:
            args = pip_install_args(argv)
            if args and any(re.fullmatch(r"\.(\[[\w,-]+\])?", a) for a in args):
                found.append(args)
    return found


def test_gateway_image(dockerfiles):
    df = dockerfiles["gateway"]
    assert df.final.external_base.startswith("python:3.11"), df.final.external_base
    ((_, version, index),) = _torch_installs(df)
    assert version == _project_torch_pin()
    assert index == "https://download.pytorch.org/whl/cpu"
    assert _project_installs(df, df.final.chain()), "gateway must `pip install .`"
    apt = [a for r in runs(df) for _, a in r.commands if a[:2] == ["apt-get", "install"]]
    assert {"libgl1", "libglib2.0-0"} <= {p for a in apt for p in a}
    assert any(
        re.fullmatch(r"8000(/tcp)?", p) for i in df.final.all("EXPOSE") for p in i.args.split()
    )
    (health,) = df.final.all("HEALTHCHECK")
    assert health.args.startswith("CMD") and "/healthz" in health.args


def test_worker_image_cuda_torch_and_python(dockerfiles):
    df = dockerfiles["worker"]
    assert re.fullmatch(
        r"nvidia/cuda:[\d.]+-(cudnn-)?(runtime|devel|base)-ubuntu[\d.]+", df.final.external_base
    )
    ((stage, version, index),) = _torch_installs(df)
    assert version == _project_torch_pin()
    m = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)", index or "")
    assert m, f"torch must come from a CUDA index of download.pytorch.org, got {index}"
    cuda = re.match(r"nvidia/cuda:(\d+)\.(\d+)", stage.external_base)
    assert cuda and m.group(1) == cuda.group(1) + cuda.group(2), (
        f"torch cu{m.group(1)} does not match the CUDA {stage.external_base} it is built in"
    )
    scripts = " ".join(
        r.script + " " + " ".join(" ".join(a) for _, a in r.commands) for r in runs(df, [stage])
    )
    assert re.search(r"\b3\.11\b", scripts), "the worker venv must use Python 3.11"


def test_worker_builds_nvdiffrast_from_source(dockerfiles):
    df = dockerfiles["worker"]
    matches = []
    for run in runs(df):
        commands = run.commands
        clone = [
            argv
            for _, argv in commands
            if argv[:2] == ["git", "clone"]
            and any(re.fullmatch(r"https://github\.com/NVlabs/nvdiffrast(\.git)?", a) for a in argv)
        ]
        builds = [
            (env, argv)
            for env, argv in commands
            if "--no-build-isolation" in (pip_install_args(argv) or [])
        ]
        if clone and builds:
            matches.append((run, clone[0], builds[0]))
    assert matches, (
        "expected one RUN that git-clones NVlabs/nvdiffrast and pip installs it --no-build-isolation"
    )
    ((run, clone, (env, _)),) = matches
    ref = option_value(clone, "--branch", "-b")
    assert ref and re.fullmatch(r"v?\d+\.\d+(\.\d+)?", ref), (
        f"nvdiffrast must be pinned to a tag, got {ref}"
    )
    assert env.get("TORCH_CUDA_ARCH_LIST", "").strip(), (
        "TORCH_CUDA_ARCH_LIST must be set for the build"
    )
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-(cudnn-)?devel-.*", run.stage.external_base), (
        "nvdiffrast needs nvcc: build it in a CUDA devel stage"
    )
    # The final image must get that build: same stage, or a COPY --from of it.
    if run.stage is not df.final and run.stage not in df.final.chain():
        copied = {i.flag("from") for i in df.final.all("COPY")}
        assert run.stage.name in copied, "the final stage does not copy the nvdiffrast build"


def test_worker_installs_the_gpu_extra(dockerfiles):
    df = dockerfiles["worker"]
    extras = set()
    for args in _project_installs(df, df.final.chain()):
        for arg in args:
            m = re.fullmatch(r"\.\[([\w,-]+)\]", arg)
            if m:
                extras |= set(m.group(1).split(","))
    assert "gpu" in PYPROJECT["project"]["optional-dependencies"]
    assert "gpu" in extras, 'the worker image must `pip install ".[gpu]"`'


# ---------------------------------------------------------------------------------------
# Every `avatars ...` the images and compose run resolves in the real CLI (service/cli.py)
# ---------------------------------------------------------------------------------------

# (service or image, expected command path, options that must exist on that command)
EXPECTED_COMMANDS = {
    "gateway": (("serve",), {"--host", "--port"}),
    "worker": (("worker",), {"--queues"}),
    "fit-worker": (("worker",), {"--queues"}),
    "inpaint-worker": (("worker",), {"--queues"}),
}


def _check_argv(cli: click.Command, argv: list[str], where: str) -> Resolved:
    script = PYPROJECT["project"]["scripts"]
    assert argv and argv[0].rsplit("/", 1)[-1] in script, (
        f"{where}: {argv} does not run a project script"
    )
    try:
        resolved = resolve_cli(cli, argv[1:])
    except click.ClickException as exc:
        pytest.fail(f"{where}: `{shlex.join(argv)}` is rejected by the CLI: {exc.format_message()}")
    used = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")}
    missing = used - option_names(resolved.command)
    assert not missing, f"{where}: options {missing} not defined on `{' '.join(resolved.path)}`"
    return resolved


@pytest.mark.parametrize("image", DOCKERFILES)
def test_image_default_command_resolves(image, dockerfiles, cli):
    argv = container_argv(dockerfiles[image].final)
    resolved = _check_argv(cli, argv, f"{image} image ENTRYPOINT+CMD")
    path, options = EXPECTED_COMMANDS[image]
    assert resolved.path == path
    assert options <= option_names(resolved.command)


@pytest.mark.parametrize("service", APP_SERVICES)
def test_compose_command_resolves(service, compose, dockerfiles, cli):
    spec = compose["services"][service]
    argv = container_argv(
        service_stage(spec, dockerfiles), spec.get("command"), spec.get("entrypoint")
    )
    resolved = _check_argv(cli, argv, f"compose service {service}")
    path, options = EXPECTED_COMMANDS[service]
    assert resolved.path == path
    assert options <= option_names(resolved.command)
    if service.endswith("-worker"):
        queue = service.removesuffix("-worker")
        assert option_value(argv, "--queues") == queue, f"{service} must consume the {queue} queue"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_run_steps_calling_avatars_resolve(image, dockerfiles, cli):
    df = dockerfiles[image]
    paths = []
    for run in runs(df):
        for _, argv in run.commands:
            if argv and argv[0].rsplit("/", 1)[-1] == "avatars":
                paths.append(_check_argv(cli, argv, f"{image}:{run.instruction.line}").path)
    assert ("models", "prepare") in paths, (
        f"{image}: `avatars models prepare` must run at build time"
    )
    # ...in the stage that becomes the image, so the cache it builds is in the image.
    final_runs = [
        a
        for r in runs(df, df.final.chain())
        for _, a in r.commands
        if a[:3] == ["avatars", "models", "prepare"]
    ]
    assert final_runs, f"{image}: `avatars models prepare` must run in the final stage"
