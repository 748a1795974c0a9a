"""Packaging contract: light imports, the command line, results schema helpers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from esam.utils.io import sha256_file, write_json_atomic
from esam.utils.meta import run_metadata
from esam.utils.results import ResultsSchemaError, make_results, validate_results

HEAVY = (
    "mmcv",
    "mmdet",
    "mmseg",
    "segment_anything",
    "timm",
    "pandas",
    "matplotlib",
    "pycocotools",
    "lvis",
)


def test_core_import_is_light() -> None:
    code = "import sys, esam; esam.build_model('efficientsam_vitt', img_size=64, encoder_depth=1); print(sorted(m for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out.replace("'", '"')))
    assert not [m for m in HEAVY if m in loaded]


def test_cli_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "esam.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "predict" in out


def test_atomic_json_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(ValueError):
        write_json_atomic(target, {"a": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    assert len(sha256_file(target)) == 64


def test_atomic_writers_keep_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    """Checkpoints and tar shards go through the same atomic output as results files."""
    import torch

    from esam.data.tarshards import write_tar_atomic
    from esam.train.checkpointing import save_atomic
    from esam.utils.io import atomic_output

    ckpt, shard, raw = tmp_path / "m.pt", tmp_path / "s.tar", tmp_path / "b.bin"
    save_atomic({"w": torch.ones(2)}, ckpt)
    write_tar_atomic(shard, [("a.json", b"{}")])
    before = {p: p.read_bytes() for p in (ckpt, shard)}
    raw.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="stop"), atomic_output(raw) as f:
        f.write(b"new, half written")
        raise RuntimeError("stop")
    with pytest.raises(TypeError):
        save_atomic({"w": object()}, ckpt)

    def members():
        yield "a.json", b"{}"
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        write_tar_atomic(shard, members())
    assert raw.read_bytes() == b"old"
    assert {p: p.read_bytes() for p in (ckpt, shard)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "m.pt", "s.tar"]
    assert torch.load(ckpt, weights_only=True)["w"].tolist() == [1.0, 1.0]


def test_results_schema_round_trip(tmp_path: Path) -> None:
    meta = run_metadata(device="cpu", dtype="fp32")
    assert meta["hardware"]["cpu_cores"] >= 1 and "torch" in meta["versions"]
    obj = make_results("zeroshot", {"name": "m"}, {"prompt": "box"}, {"miou": 50.0}, meta)
    write_json_atomic(tmp_path / "x.json", obj)
    assert validate_results(json.loads((tmp_path / "x.json").read_text())) == obj
    bad = dict(obj)
    del bad["meta"]
    with pytest.raises(ResultsSchemaError, match="missing key 'meta'"):
        validate_results(bad, "x.json")
    with pytest.raises(ResultsSchemaError, match="schema is"):
        validate_results({**obj, "schema": "other/1"})


def test_git_commit_marks_untracked_code_dirty(tmp_path: Path) -> None:
    from esam.utils.meta import git_commit

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "esam").mkdir()
    (tmp_path / "esam" / "__init__.py").write_text("")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = git_commit(tmp_path)
    assert sha is not None and len(sha) == 40
    (tmp_path / "results.json").write_text("{}")  # data written into the checkout: still clean
    assert git_commit(tmp_path) == sha
    (tmp_path / "esam" / "new.py").write_text("x = 1\n")
    assert git_commit(tmp_path) == f"{sha}-dirty"
    assert git_commit(tmp_path / "esam") is None  # not the root of an esam checkout


def test_missing_optional_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from esam.cli import predict

    def handler(args: object) -> int:
        raise ModuleNotFoundError("No module named 'pandas'", name="pandas")

    monkeypatch.setattr(predict, "run", handler)
    from esam.cli.main import main

    assert main(["predict", "--image", "x", "--box", "1,2,3,4", "--out", "y"]) == 2
    assert "pip install 'esam[report]'" in capsys.readouterr().err


def test_atomic_files_get_umask_permissions(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "p.json", {})
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
