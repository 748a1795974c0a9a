"""Loading results files into the tidy frame: validation, skipped files, units, CSV round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from esam.report.load import (
    TIDY_COLUMNS,
    discover,
    load_results,
    read_tidy_csv,
    results_to_rows,
    write_tidy_csv,
)
from esam.report.published import load_published
from esam.utils.results import make_results

FIXTURES = Path(__file__).parent / "fixtures" / "results"
PUBLISHED = Path(__file__).resolve().parents[1] / "reports" / "published.json"


@pytest.fixture(scope="module")
def loaded():
    return load_results([FIXTURES], warn=False)


def _meta() -> dict:
    return {
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "versions": {"python": "3.11"},
        "hardware": {"cpu_model": "Test CPU"},
        "device": "cpu",
        "dtype": "fp32",
        "start_time": "2024-01-01T00:00:00+00:00",
        "end_time": "2024-01-01T00:01:00+00:00",
    }


def test_discover_is_recursive_and_ignores_row_files():
    paths = discover([FIXTURES])
    names = {p.name for p in paths}
    assert "coco_box_efficientsam_ti_seed0.json" in names  # two levels down
    assert "malformed.json" in names
    assert not any(".rows." in n for n in names)
    assert all(p.suffix == ".json" for p in paths)


def test_discover_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="results folder not found"):
        discover([tmp_path / "nope"])


def test_side_files_are_not_reported_as_skipped(tmp_path):
    obj = json.loads((FIXTURES / "fixture_gpu" / "instseg" / "coco_sam_vit_h.json").read_text())
    obj["files"] = {"boxes": "run.boxes.json"}
    (tmp_path / "run.json").write_text(json.dumps(obj))
    (tmp_path / "run.boxes.json").write_text("[]")  # named by the results file
    (tmp_path / "run.segm.json").write_text("[]")  # raw segmentations
    (tmp_path / "stray.json").write_text("[]")  # named by nobody: reported
    loaded = load_results([tmp_path], warn=False)
    assert [Path(f).name for f in loaded.files] == ["run.json"]
    assert [Path(s.path).name for s in loaded.skipped] == ["stray.json"]


def test_bad_files_are_skipped_with_path_and_reason(loaded, capsys):
    reasons = {Path(s.path).name: s.reason for s in loaded.skipped}
    assert set(reasons) == {"malformed.json", "foreign.json", "missing_commit.json"}
    assert reasons["malformed.json"].startswith("malformed JSON")
    assert "not an esam results file" in reasons["foreign.json"]
    assert "meta.git_commit" in reasons["missing_commit.json"]
    assert len(loaded.files) == 18

    load_results([FIXTURES / "broken"], warn=True)
    err = capsys.readouterr().err
    assert err.count("warning: skipped") == 3
    assert "foreign.json" in err


def test_tidy_frame_shape_and_provenance(loaded):
    df = loaded.frame
    assert tuple(df.columns) == TIDY_COLUMNS
    assert set(df["source"]) == {"measured"}
    assert {"zeroshot", "instseg", "throughput", "model", "sami_pretrain"} <= set(df["task"])
    row = df[
        (df["task"] == "zeroshot") & (df["model"] == "mobilesam") & (df["metric"] == "miou")
    ].iloc[0]
    assert row["value"] == pytest.approx(72.9)
    assert bool(row["higher_is_better"]) is True
    assert row["commit"] == "9b1e7d3-dirty"
    assert (row["device"], row["hardware"], row["dtype"]) == (
        "cpu",
        "Fixture CPU (synthetic) (2 cores, 2 threads)",
        "fp32",
    )
    assert row["date"].startswith("2024-06-03")
    assert row["setting"] == "box" and row["dataset"] == "coco"
    assert row["results_file"].endswith("coco_box_mobilesam.json")
    # counts carry no direction
    n = df[(df["metric"] == "n_instances")]["higher_is_better"]
    assert n.isna().all()


def test_throughput_rows_take_their_own_config(loaded):
    df = loaded.frame
    thr = df[
        (df["task"] == "throughput")
        & (df["model"] == "efficientsam_vitt")
        & (df["device"] == "cuda:0")
    ]
    fast = thr[(thr["batch_size"] == 8) & (thr["metric"] == "images_per_s")].iloc[0]
    assert fast["dtype"] == "bf16" and bool(fast["compile"]) is True
    assert fast["component"] == "end_to_end" and fast["setting"] == "fast"
    assert fast["hardware"] == "Fixture GPU (synthetic)"
    lat = thr[thr["metric"] == "latency_p50_ms"]
    assert not lat["higher_is_better"].any()  # lower is better
    # bookkeeping numbers of a declared task (warm-up, iterations) are not metrics
    assert not thr["metric"].isin(["warmup", "iters"]).any()
    # encoder rows have no mIoU (null in the file) and produce no row for it
    enc = thr[thr["component"] == "image_encoder"]
    assert "miou_vs_fp32" not in set(enc["metric"])


def test_model_block_becomes_model_rows(loaded):
    df = loaded.frame
    params = df[(df["task"] == "model") & (df["metric"] == "params_total")]
    assert set(params["model"]) == {
        "efficientsam_vitt",
        "efficientsam_vits",
        "sam_vit_h",
        "mobilesam",
    }
    assert params[params["model"] == "sam_vit_h"]["value"].iloc[0] == 641_090_000


def test_fraction_percentages_are_scaled_and_noted(loaded):
    df = loaded.frame
    ap = df[
        (df["task"] == "instseg") & (df["model"] == "efficientsam_vits") & (df["metric"] == "ap")
    ].iloc[0]
    assert ap["value"] == pytest.approx(42.1)
    assert "fraction" in ap["note"]
    sam = df[
        (df["task"] == "instseg") & (df["model"] == "sam_vit_h") & (df["metric"] == "ap")
    ].iloc[0]
    assert sam["value"] == pytest.approx(46.3) and sam["note"] == ""
    det = df[(df["model"] == "efficientsam_vits") & (df["metric"] == "n_detections")].iloc[0]
    assert det["value"] == 36335  # counts are never rescaled


def test_instseg_setting_names_the_detector(loaded):
    inst = loaded.frame[loaded.frame["task"] == "instseg"]
    assert set(inst["setting"]) == {"vitdet"}  # from config.detections = .../coco_vitdet.json
    macs = loaded.frame[(loaded.frame["task"] == "model") & (loaded.frame["metric"] == "macs")]
    assert set(macs["model"]) == {
        "efficientsam_vitt",
        "efficientsam_vits",
        "sam_vit_h",
        "mobilesam",
    }


def test_incomplete_run_is_noted():
    obj = make_results(
        task="throughput",
        model={"name": "m", "mode": "fast", "weights": "untrained"},
        config={},
        metrics=[
            {
                "component": "end_to_end",
                "batch_size": 1,
                "dtype": "fp32",
                "compile": False,
                "images_per_s": 10.0,
                "latency_p50_ms": None,
            }
        ],
        meta=_meta(),
        complete=False,
    )
    (row,) = results_to_rows(obj, "t.json")
    assert row["metric"] == "images_per_s" and row["setting"] == "fast"
    assert (
        row["note"]
        == "incomplete run (complete = false); untrained weights: accuracy is not meaningful"
    )


def test_unknown_task_and_extra_keys_are_tolerated():
    obj = make_results(
        task="new_task",
        model={"name": "m", "extra": [1, 2]},
        config={"seed": 0},
        metrics={"score": 0.5, "loss": 1.25, "nested": {"a": 2.0}, "label": "text"},
        meta=_meta(),
        something_else={"x": 1},
    )
    rows = results_to_rows(obj, "x.json")
    by_metric = {r["metric"]: r for r in rows}
    assert set(by_metric) == {"score", "loss", "nested.a"}
    assert by_metric["score"]["higher_is_better"] is True
    assert by_metric["loss"]["higher_is_better"] is False
    assert by_metric["score"]["value"] == 0.5  # unknown tasks are never rescaled


def test_csv_round_trip(loaded, tmp_path):
    published = load_published(PUBLISHED).frame
    df = pd.concat([loaded.frame, published], ignore_index=True)
    path = write_tidy_csv(df, tmp_path / "results.csv")
    back = read_tidy_csv(path)
    pd.testing.assert_frame_equal(back, df)
    assert back["batch_size"].dtype == "Int64"
    assert back["higher_is_better"].dtype == "boolean"


def test_published_file_entries(tmp_path):
    pub = load_published(PUBLISHED)
    assert pub.skipped == []
    df = pub.frame
    assert len(df) > 20
    assert set(df["source"]) == {"published"}
    assert df["reference"].str.len().gt(10).all()
    assert df["commit"].eq("").all()
    # every percentage is on the 0-100 scale
    pct = df[df["metric"].isin(["ap", "miou", "miou_small", "miou_medium", "miou_large"])]
    assert pct["value"].between(1, 100).all()

    bad = tmp_path / "pub.json"
    bad.write_text(
        json.dumps(
            {
                "schema": "esam.published/1",
                "entries": [
                    {
                        "model": "a",
                        "task": "zeroshot",
                        "dataset": "coco",
                        "setting": "box",
                        "metric": "miou",
                        "value": 70.0,
                        "source": "Some paper, Table 1",
                    },
                    {
                        "model": "b",
                        "task": "zeroshot",
                        "dataset": "coco",
                        "setting": "box",
                        "metric": "miou",
                        "value": "n/a",
                        "source": "Some paper, Table 1",
                    },
                    {"model": "c", "task": "zeroshot"},
                ],
            }
        )
    )
    pub = load_published(bad)
    assert list(pub.frame["model"]) == ["a"]
    assert [s.path.rsplit(" ", 1)[-1] for s in pub.skipped] == ["1)", "2)"]
    assert "not a number" in pub.skipped[0].reason and "missing" in pub.skipped[1].reason


def _instseg(metrics: dict, **extra) -> dict:
    return make_results(
        task="instseg",
        model={"name": "efficientsam_vitt"},
        config={"prompt": "detector_box", "detections": "d/coco_vitdet.json"},
        metrics=metrics,
        meta=_meta(),
        dataset={"name": "coco"},
        **extra,
    )


def test_low_percentages_are_never_rescaled_by_guessing():
    # placeholder weights give genuinely tiny scores: 0.3 % AP must not become 30 %
    obj = _instseg({"ap": 0.3, "ap50": 0.9, "ap75": 0.0, "n_detections": 12})
    by_metric = {r["metric"]: r for r in results_to_rows(obj, "low.json")}
    assert by_metric["ap"]["value"] == pytest.approx(0.3)
    assert by_metric["ap50"]["value"] == pytest.approx(0.9)
    assert by_metric["ap"]["note"] == ""
    declared = _instseg({"ap": 0.3, "n_detections": 12}, units={"percent_metrics": "percent"})
    assert results_to_rows(declared, "p.json")[0]["value"] == pytest.approx(0.3)


def test_declared_fractions_are_scaled_and_unknown_units_skipped(tmp_path):
    obj = _instseg({"ap": 0.3, "n_detections": 12}, units={"percent_metrics": "Fraction"})
    by_metric = {r["metric"]: r for r in results_to_rows(obj, "f.json")}
    assert by_metric["ap"]["value"] == pytest.approx(30.0)
    assert "fraction" in by_metric["ap"]["note"]
    assert by_metric["n_detections"]["value"] == 12  # counts are never rescaled

    bad = _instseg({"ap": 0.3}, units={"percent_metrics": "permille"})
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    loaded = load_results([tmp_path], warn=False)
    (skipped,) = loaded.skipped
    assert skipped.path.endswith("bad.json") and "units.percent_metrics" in skipped.reason


@pytest.mark.parametrize(
    ("model", "flagged"),
    [
        ({"weights": "untrained"}, "untrained"),
        ({"weights": "Untrained"}, "untrained"),
        ({"weights": "STANDIN"}, "standin"),
        ({"weights": "stand-in (seed 0)"}, "stand-in (seed 0)"),
        ({"weights": "Random init"}, "random init"),
        ({"weights_kind": "standin"}, "standin"),
        ({"checkpoint_note": "Stand-in weights, not trained"}, "stand-in weights, not trained"),
        ({"weights": "weights/efficient_sam_vitt.pt"}, None),
        ({"weights": "official"}, None),
        ({}, None),
    ],
)
def test_placeholder_weights_are_flagged(model, flagged):
    obj = _instseg({"ap": 40.0})
    obj["model"].update(model)
    (row,) = [r for r in results_to_rows(obj, "w.json") if r["metric"] == "ap"]
    if flagged is None:
        assert row["note"] == ""
    else:
        assert row["note"] == f"{flagged} weights: accuracy is not meaningful"


def test_checkpoint_identity_of_a_run():
    obj = _instseg({"ap": 40.0})
    obj["model"].update(checkpoint="w/a.pt", checkpoint_sha256="ABCDEF0123456789" * 4)
    assert results_to_rows(obj, "c.json")[0]["checkpoint"] == "abcdef01"
    obj["model"].update(checkpoint_sha256=None)
    assert results_to_rows(obj, "c.json")[0]["checkpoint"] == "a.pt"  # no hash: the file name
    obj["model"].update(checkpoint=None, weights="untrained")
    assert results_to_rows(obj, "c.json")[0]["checkpoint"] == "untrained"
    obj["model"].update(weights="Standin")
    assert results_to_rows(obj, "c.json")[0]["checkpoint"] == "standin"
    # untrained heads on two backbones (downstream smoke runs) are two rows, not one
    obj["model"].update(weights="untrained heads (smoke run)", backbone_sha256="B" * 64)
    assert results_to_rows(obj, "c.json")[0]["checkpoint"] == "untrained on bbbbbbbb"
    obj["model"].pop("backbone_sha256")
    obj["model"].pop("weights")
    assert results_to_rows(obj, "c.json")[0]["checkpoint"] == ""  # nothing recorded


def test_published_aliases_map_names_and_keep_the_original(tmp_path):
    pub = load_published(PUBLISHED)
    assert pub.aliases["EfficientSAM-Ti"] == "efficientsam_vitt"
    df = pub.frame
    assert "EfficientSAM-Ti" not in set(df["model"])  # every aliased name is mapped
    ti = df[df["published_as"] == "EfficientSAM-Ti"]
    assert len(ti) and set(ti["model"]) == {"efficientsam_vitt"}
    assert set(df.loc[df["model"] == "FastSAM", "published_as"]) == {""}  # no esam adapter
    # names esam really writes: its adapters' and, for the pretraining tables, the backbone
    # names the paper suite gives its runs (results name a backbone by its file's stem)
    import yaml

    from esam.adapters import available_adapters
    from esam.suite.spec import suite_path

    paper = yaml.safe_load(suite_path("paper").read_text())
    backbones = {m["model"] for m in paper["models"].values()}
    assert set(pub.aliases.values()) <= set(available_adapters()) | backbones
    assert pub.aliases["SAMI ViT-Ti"] == "sami_vit_tiny"

    entry = {
        "model": "Paper-Net",
        "task": "zeroshot",
        "dataset": "coco",
        "setting": "box",
        "metric": "miou",
        "value": 70.0,
        "source": "Some paper, Table 1",
    }
    path = tmp_path / "pub.json"
    for aliases, model, problem in [
        ({"Paper-Net": "paper_net"}, "paper_net", None),
        (["Paper-Net"], "Paper-Net", "not an object"),
        ({"Paper-Net": 3}, "Paper-Net", "not a model name"),
    ]:
        path.write_text(
            json.dumps({"schema": "esam.published/1", "aliases": aliases, "entries": [entry]})
        )
        got = load_published(path)
        assert list(got.frame["model"]) == [model]
        reasons = [s.reason for s in got.skipped]
        assert (reasons == []) if problem is None else (problem in reasons[0])


def test_the_same_cpu_model_with_other_cores_or_threads_is_other_hardware() -> None:
    from esam.report.load import hardware_label

    def meta(cores: int | None, threads: int | None) -> dict:
        hw = {"cpu_model": "Xeon", "cpu_cores": cores, "torch_threads": threads}
        return {"device": "cpu", "hardware": hw}

    labels = {hardware_label(meta(c, t)) for c, t in ((2, 2), (32, 32), (32, 8))}
    assert labels == {"Xeon (2 cores, 2 threads)", "Xeon (32 cores, 32 threads)",
                      "Xeon (32 cores, 8 threads)"}  # fmt: skip
    assert hardware_label(meta(None, None)) == "Xeon"  # older files without the counts
    gpu = {"device": "cuda", "hardware": {"gpu_name": "NVIDIA H100", "cpu_model": "Xeon"}}
    assert hardware_label(gpu) == "NVIDIA H100"


def test_model_rows_of_a_run_with_architecture_overrides_are_their_own_variant() -> None:
    from esam.report.load import _model_rows

    model = {"params": {"total": 2_000_000}, "macs": {"end_to_end": 1e9}}
    small = _model_rows(model, {"model": "efficientsam_vitt"}, {"overrides": {"encoder_depth": 2}})
    full = _model_rows(model, {"model": "efficientsam_vitt"}, {"overrides": {}})
    assert {r["variant"] for r in small} == {'overrides={"encoder_depth": 2}'}
    assert {r["variant"] for r in full} == {""}
    one = _model_rows(model, {"model": "efficientsam_vitt"}, {"prompts_per_image": 1})
    ten = _model_rows(model, {"model": "efficientsam_vitt"}, {"prompts_per_image": 10})
    assert {r["variant"] for r in one} == {""}
    assert {r["variant"] for r in ten} == {"prompts_per_image=10"}
    assert {r["metric"] for r in small} == {"params_total", "macs"}


@pytest.mark.parametrize("task", ["imagenet", "pretrain", "finetune"])
def test_training_runs_add_no_model_size_rows(tmp_path, task):
    """A classifier's or a pretraining run's parameter count is that of what it trained (a
    head, a decoder), not of the model its name denotes: no model-size row from it."""
    obj = json.loads((FIXTURES / "cpu" / "zeroshot" / "coco_box_mobilesam.json").read_text())
    obj["model"]["params"] = 110_000
    (tmp_path / "zeroshot.json").write_text(json.dumps(obj))
    assert set(load_results([tmp_path], warn=False).frame["task"]) == {"zeroshot", "model"}
    obj["task"] = task
    obj["metrics"]["final_loss" if task != "imagenet" else "top1"] = 0.5  # a declared metric
    (tmp_path / "zeroshot.json").write_text(json.dumps(obj))
    frame = load_results([tmp_path], warn=False).frame
    assert set(frame["task"]) == {task}
