"""``esam eval``: subcommands, end-to-end runs on the shipped sample, and user-facing errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from esam.cli.main import main
from esam.data.images import read_image
from esam.data.synthetic import SAMPLE_DIR, sample_paths, synthetic_detections, write_synthetic_coco
from esam.utils.results import validate_results

ANN, IMG = sample_paths()
COMMON = [
    "--dataset",
    "coco",
    "--annotations",
    str(ANN),
    "--images",
    str(IMG),
    "--workers",
    "0",
    "--no-progress",
]


def test_shipped_sample_is_small_and_complete() -> None:
    files = [p for p in SAMPLE_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 300_000
    data = json.loads(ANN.read_text())
    assert len(data["images"]) == 4 and all(
        (IMG / i["file_name"]).is_file() for i in data["images"]
    )
    assert (SAMPLE_DIR / "detections.json").is_file()


def test_shipped_sample_regenerates_identically(tmp_path: Path) -> None:
    ann, img = write_synthetic_coco(tmp_path, n_images=4)
    assert json.loads(ann.read_text()) == json.loads(ANN.read_text())
    for f in sorted(IMG.iterdir()):
        assert np.array_equal(read_image(str(f)), read_image(str(img / f.name))), f.name
    assert json.loads((SAMPLE_DIR / "detections.json").read_text()) == synthetic_detections(ANN)


def test_models_lists_adapters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "models"]) == 0
    out = capsys.readouterr().out
    assert "box_fill" in out and "efficientsam_vitt" in out and "esam.adapters" in out


def test_zeroshot_and_instseg_on_the_shipped_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "zs.json"
    assert (
        main(
            [
                "eval",
                "zeroshot",
                "--model",
                "oracle",
                "--prompt",
                "point1",
                "--click",
                "center",
                *COMMON,
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert "mIoU=100.00" in capsys.readouterr().out
    res = validate_results(json.loads(out.read_text()))
    assert res["metrics"]["n_instances"] == 28 and res["config"]["click"] == "center"
    out2 = tmp_path / "is.json"
    argv = [
        "eval",
        "instseg",
        "--model",
        "box_fill",
        "--detections",
        str(SAMPLE_DIR / "detections.json"),
        *COMMON,
    ]
    assert main([*argv, "--output", str(out2), "--save-segm"]) == 0
    res2 = validate_results(json.loads(out2.read_text()))
    assert res2["task"] == "instseg" and res2["metrics"]["n_detections"] == 32
    assert (tmp_path / res2["files"]["segm"]).is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (
            ["--model", "oracle", "--prompt", "point3", "--click", "center"],
            "--click center defines a single click",
        ),
        (["--model", "efficientsam_vitt"], "needs --checkpoint"),
        (
            ["--model", "efficientsam_vitt", "--checkpoint", "/no/such.pt"],
            "checkpoint file not found",
        ),
        (["--model", "oracle", "--limit-images", "0"], "limit_images must be >= 1"),
    ],
)
def test_user_errors_exit_2_with_a_message(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["eval", "zeroshot", *extra, *COMMON, "--output", str(tmp_path / "x.json")])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_missing_annotation_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "eval",
        "zeroshot",
        "--model",
        "oracle",
        "--dataset",
        "coco",
        "--annotations",
        str(tmp_path / "a.json"),
        "--images",
        str(IMG),
        "--output",
        str(tmp_path / "x.json"),
    ]
    assert main(argv) == 2
    assert "annotation file not found" in capsys.readouterr().err


def test_argparse_rejects_unknown_choices() -> None:
    with pytest.raises(SystemExit) as e:
        main(
            [
                "eval",
                "zeroshot",
                "--model",
                "oracle",
                "--prompt",
                "point5",
                *COMMON,
                "--output",
                "x.json",
            ]
        )
    assert e.value.code == 2


@pytest.mark.parametrize("where", ["under_a_file", "is_a_folder"])
def test_bad_output_path_fails_before_the_model_is_loaded(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "taken.json"
    blocker.write_text("{}")
    output = blocker / "x.json" if where == "under_a_file" else tmp_path
    # the checkpoint does not exist either: the output is checked first, before any loading
    argv = ["eval", "zeroshot", "--model", "efficientsam_vitt", "--checkpoint", "/no/such.pt"]
    rc = main([*argv, *COMMON, "--output", str(output)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert (
        "is a file, not a folder" if where == "under_a_file" else "is an existing folder"
    ) in err
    assert "checkpoint" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.json"]  # no orphan rows file


def test_os_errors_are_one_line_and_bugs_keep_their_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import esam.eval.zeroshot as zs

    argv = ["eval", "zeroshot", "--model", "oracle", *COMMON, "--output", str(tmp_path / "r.json")]

    def denied(cfg):
        raise PermissionError(13, "Permission denied", "/data/val2017/1.jpg")

    monkeypatch.setattr(zs, "run_zeroshot", denied)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("esam eval: error:")
    assert "Permission denied" in err and "/data/val2017/1.jpg" in err

    def bug(cfg):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(zs, "run_zeroshot", bug)
    with pytest.raises(ValueError, match="broadcast"):
        main(argv)
