"""The locked environment: the lock covers what the core tox envs install, and results say
which environment produced them (docs/environment.md)."""

from __future__ import annotations

import configparser
import os
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from esam.utils import meta
from esam.utils.meta import (
    LOCK_FILE,
    LOCK_FILE_ENV,
    LockFileError,
    canonical_name,
    environment_info,
    installed_versions,
    parse_lock,
    read_lock,
    run_metadata,
)

ROOT = Path(__file__).resolve().parents[1]
CORE_ENVS = ("lint", "tests", "demo", "bench")


def _tox_ini() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini")
    return parser


def _env_value(ini: configparser.ConfigParser, env: str, key: str) -> str:
    """A setting of a tox env as tox 4 reads it: its own section, then its `base` sections."""
    section = f"testenv:{env}"
    bases = [b.strip() for b in re.split(r"[,\s]+", ini.get(section, "base", fallback="testenv"))]
    for name in [section, *[b for b in bases if b]]:
        if ini.has_option(name, key):
            return ini.get(name, key)
    return ""


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _core_requirements() -> list[Requirement]:
    """Everything the core envs install by name: esam's dependencies and core extras (self
    references such as esam[...] expanded), the envs' deps, and the build backend."""
    project = _pyproject()
    extras: dict[str, list[str]] = project["project"]["optional-dependencies"]
    ini = _tox_ini()
    wanted = set(_lines(_env_value(ini, "tests", "extras")))
    reqs = [Requirement(r) for r in project["project"]["dependencies"]]
    seen: set[str] = set()
    while wanted - seen:
        extra = sorted(wanted - seen)[0]
        seen.add(extra)
        for text in extras[extra]:
            req = Requirement(text)
            if canonical_name(req.name) == "esam":
                wanted |= set(req.extras)
            else:
                reqs.append(req)
    reqs += [Requirement(r) for r in _lines(_env_value(ini, "tests", "deps"))]
    reqs += [Requirement(r) for r in project["build-system"]["requires"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


def test_lock_pins_every_core_requirement() -> None:
    pins = read_lock(ROOT / LOCK_FILE)
    missing = [str(r) for r in _core_requirements() if canonical_name(r.name) not in pins]
    assert not missing, f"not in {LOCK_FILE}: {missing}; run `tox -e lock`"
    outside = [
        f"{r} (locked {pins[canonical_name(r.name)]})"
        for r in _core_requirements()
        if not r.specifier.contains(pins[canonical_name(r.name)], prereleases=True)
    ]
    assert not outside, f"{LOCK_FILE} pins versions outside: {outside}; run `tox -e lock`"


def test_lock_holds_the_pins_of_its_input() -> None:
    pins = read_lock(ROOT / LOCK_FILE)
    assert "torch" in pins and "torchvision" in pins
    for line in _lines((ROOT / "requirements" / "core.in").read_text()):
        if line.startswith("#"):
            continue
        req = Requirement(line)
        assert canonical_name(req.name) in pins, f"{req.name} from core.in is not locked"
        assert req.specifier.contains(pins[canonical_name(req.name)], prereleases=True), req


def test_core_envs_share_the_lock_and_one_torch() -> None:
    ini = _tox_ini()
    lock = "{tox_root}{/}requirements{/}constraints.txt"
    settings = {
        env: {
            key: _env_value(ini, env, key)
            for key in ("runner", "env_dir", "constraints", "deps", "extras", "basepython")
        }
        for env in CORE_ENVS
    }
    for env, values in settings.items():
        assert values["constraints"] == lock, env
        assert values["runner"] == "shared-virtualenv", env
        assert values == settings["tests"], f"{env} differs from tests: one shared environment"
    deps = [Requirement(d) for d in _lines(settings["tests"]["deps"])]
    torch = [d for d in deps if canonical_name(d.name) in ("torch", "torchvision")]
    assert sorted(d.name for d in torch) == ["torch", "torchvision"]
    assert all(not d.specifier for d in torch), "torch versions come from the lock alone"
    assert ini.get("pkgenv", "constraints") == lock
    envlist = {e.strip() for e in re.split(r"[,\s]+", ini.get("tox", "envlist")) if e.strip()}
    assert envlist <= set(CORE_ENVS)


def test_lock_env_compiles_the_core_extras() -> None:
    ini = _tox_ini()
    command = " ".join(_lines(ini.get("testenv:lock", "commands")))
    compiled = set(re.findall(r"--extra (\S+)", command))
    assert compiled == set(_lines(_env_value(ini, "tests", "extras")))
    assert "--output-file requirements{/}constraints.txt" in command
    assert "pyproject.toml requirements{/}core.in" in command


def test_ci_installs_the_locked_tox() -> None:
    pins = read_lock(ROOT / LOCK_FILE)
    assert "-c requirements/constraints.txt tox" in (ROOT / ".ci" / "run").read_text()
    requires = Requirement(_tox_ini().get("tox", "requires"))
    assert requires.specifier.contains(pins["tox"])


def test_ci_runs_the_readme_test_commands() -> None:
    """.ci/run runs `tox`, then `tox -e downstream` with 2 compile jobs; the README shows both."""
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith("#")]
    assert commands[-2:] == ["tox", 'MAX_JOBS="${MAX_JOBS:-2}" tox -e downstream']
    readme = (ROOT / "README.md").read_text()
    quickstart = readme[readme.index("## Quickstart") : readme.index("## Using the models")]
    blocks = quickstart.split("```")[1::2]  # the fenced blocks
    shown = [
        [ln.split("#")[0].strip() for ln in block.splitlines() if ln.startswith("tox")]
        for block in blocks
    ]
    # the quickstart proper is two commands (the demo and the tests); downstream stands apart
    assert shown[0] == ["tox -e demo", "tox"]
    assert ["tox -e downstream"] in shown[1:]
    assert "MAX_JOBS" in _env_value(_tox_ini(), "downstream", "passenv")


def test_parse_lock_reads_pins_and_rejects_the_rest() -> None:
    text = (
        "# header\n--index-url https://example.invalid/simple\n"
        "PyYAML==6.0.4  # via -r core.in\n"
        "torch[opt]==2.14.1 \\\n    --hash=sha256:00 \\\n    --hash=sha256:11\n"
        "numpy==2.4.0+cpu\n"
    )
    assert parse_lock(text) == {"pyyaml": "6.0.4", "torch": "2.14.1", "numpy": "2.4.0+cpu"}
    for bad, why in [
        ("numpy>=2\n", "not an exact pin"),
        ('numpy==2.4.0 ; python_version < "3.12"\n', "not an exact pin"),
        ("-r other.txt\n", "includes"),
        ("numpy==1\nNumPy==2\n", "pinned twice"),
    ]:
        with pytest.raises(LockFileError, match=why):
            parse_lock(bad, "x.txt")


def _lock_with(tmp_path: Path, pins: dict[str, str]) -> Path:
    path = tmp_path / "lock.txt"
    path.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    return path


def test_environment_block_matches_a_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed = installed_versions()
    lock = _lock_with(tmp_path, {"pytest": installed["pytest"], "not-installed-pkg": "1.0"})
    monkeypatch.setenv(LOCK_FILE_ENV, str(lock))
    env = environment_info()
    assert env == {
        "lock_file": str(lock.resolve()),
        "lock_sha256": meta.hashlib.sha256(lock.read_bytes()).hexdigest(),
        "matches_lock": True,
        "mismatches": {},
    }
    assert run_metadata()["environment"] == env


def test_environment_block_names_a_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = installed_versions()
    lock = _lock_with(tmp_path, {"pytest": "0.0.1", "PyTest-Other_Name": "1"})
    monkeypatch.setenv(LOCK_FILE_ENV, str(lock))
    env = environment_info()
    assert env["matches_lock"] is False
    assert env["mismatches"] == {"pytest": [installed["pytest"], "0.0.1"]}
    env["mismatches"]["pytest"][0] = "changed"  # callers get a copy of the cached comparison
    assert environment_info()["mismatches"] == {"pytest": [installed["pytest"], "0.0.1"]}


def test_environment_block_without_or_with_a_bad_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LOCK_FILE_ENV, raising=False)
    nulls = {"lock_file": None, "lock_sha256": None, "matches_lock": None, "mismatches": None}
    assert environment_info(tmp_path) == nulls  # not a checkout: e.g. an installed wheel
    (tmp_path / "esam").mkdir()
    (tmp_path / "esam" / "__init__.py").write_text("")
    assert environment_info(tmp_path) == nulls  # a checkout without a lock file
    (tmp_path / "requirements").mkdir()
    (tmp_path / LOCK_FILE).write_text("numpy>=2\n")
    bad = environment_info(tmp_path)
    assert {k: bad[k] for k in nulls} == nulls and "not an exact pin" in bad["error"]
    (tmp_path / LOCK_FILE).write_text(f"pytest=={installed_versions()['pytest']}\n")
    assert environment_info(tmp_path)["lock_file"] == LOCK_FILE
    monkeypatch.setenv(LOCK_FILE_ENV, str(tmp_path / "absent.txt"))
    missing = environment_info(tmp_path)
    assert missing["lock_file"] is None and "LockFileError" in missing["error"]
    assert f"{LOCK_FILE_ENV}=" in missing["error"]


@pytest.mark.skipif(
    os.environ.get("TOX_ENV_NAME") not in CORE_ENVS, reason="checks a core tox environment"
)
def test_core_tox_env_matches_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOCK_FILE_ENV, raising=False)
    env = environment_info()
    assert env["lock_file"] == LOCK_FILE
    assert env["matches_lock"] is True, env["mismatches"]


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Other CPU
flags\t\t: amx_bf16
"""


def test_cpuinfo_names_the_first_cpu_its_generation_and_matrix_flags() -> None:
    info = meta.parse_cpuinfo(CPUINFO)
    assert info == {
        "cpu_model": "AMD EPYC",
        "cpu_id": "AuthenticAMD family 25 model 17 stepping 1",
        # in MATRIX_FLAGS order, the flags of the first block only
        "cpu_matrix_flags": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"],
    }
    assert meta.parse_cpuinfo("processor : 0\nmodel name : X\n") == {"cpu_model": "X"}
    assert meta.parse_cpuinfo("") == {}


def test_hardware_info_always_names_a_cpu() -> None:
    info = meta.hardware_info("cpu")
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert info["cpu_cores"] == os.cpu_count()
    assert set(info.get("cpu_matrix_flags", [])) <= set(meta.MATRIX_FLAGS)
