"""Run configs: YAML, key=value overrides, checking, round trip, registered names, CLI flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from esam.cli.config_args import add_config_arguments, config_from_args
from esam.config import (
    CONFIG_FILENAME,
    ConfigError,
    config_names,
    dump_config,
    field_docs,
    load_config,
    save_config,
)
from esam.errors import UserError
from esam.train.config import TrainConfig


@dataclass
class Inner:
    """A nested group."""

    lr: float = 0.1
    """Learning rate of the group."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Two betas."""


@dataclass
class Run:
    """A toy run kind."""

    CONFIG_KIND: ClassVar[str] = "toy"

    name: str = "run"
    """Name of the run."""
    epochs: int = 10
    """Passes over the data."""
    amp: bool = False
    """Mixed precision on or off."""
    mode: Literal["a", "b"] = "a"
    """Which mode."""
    limit: int | None = None
    """Optional cap."""
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    """Some sizes."""
    extra: dict[str, Any] = field(default_factory=lambda: {"k": 1})
    """Free-form values."""
    inner: Inner = field(default_factory=lambda: Inner(lr=0.5))
    """The nested group (its default lr here is 0.5, not Inner's 0.1)."""
    scale: float = 1.0
    """A float field."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_and_yaml_merge_nested_groups_field_by_field(tmp_path: Path) -> None:
    assert load_config(Run) == Run()
    src = _yaml(tmp_path / "c.yaml", "epochs: 3\ninner:\n  betas: [0.8, 0.99]\nscale: 2\n")
    cfg = load_config(Run, src)
    # the YAML set betas only: lr keeps the parent's default for the group (0.5)
    assert cfg.inner == Inner(lr=0.5, betas=(0.8, 0.99))
    assert cfg.epochs == 3 and cfg.scale == 2.0 and isinstance(cfg.scale, float)


def test_overrides_dotted_keys_and_yaml_scalar_rules() -> None:
    cfg = load_config(
        Run,
        overrides=[
            "inner.lr=1e-3",  # YAML 1.1 would read this as a string
            "epochs=3",
            "name=123",  # a str field takes the text as it is
            "limit=null",
            "amp=true",
            "extra.note=x",  # merged into the dict's default
            "sizes=[3, 4]",
            "inner.betas=[0.5, 0.6]",
        ],
    )
    assert cfg.inner == Inner(lr=1e-3, betas=(0.5, 0.6))
    assert (cfg.epochs, cfg.name, cfg.limit, cfg.amp) == (3, "123", None, True)
    assert cfg.extra == {"k": 1, "note": "x"} and cfg.sizes == [3, 4]


def test_unknown_keys_are_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(Run, overrides=["epoch=3"])
    assert "unknown key 'epoch'" in str(e.value) and "did you mean 'epochs'" in str(e.value)
    with pytest.raises(ConfigError, match=r"unknown key 'inner.lrr' \(did you mean 'lr'\?\)"):
        load_config(Run, overrides=["inner.lrr=3"])
    with pytest.raises(ConfigError, match=r"unknown key 'lr' \(did you mean 'inner.lr'\?\)"):
        load_config(Run, overrides=["lr=3"])
    with pytest.raises(
        ConfigError, match=r"unknown key 'inner.epochs' \(did you mean 'epochs'\?\)"
    ):
        load_config(Run, overrides=["inner.epochs=3"])
    with pytest.raises(ConfigError, match=r"unknown key 'inner.zzz'$"):
        load_config(Run, overrides=["inner.zzz=3"])
    with pytest.raises(ConfigError, match="'epochs' is a int field, not a group"):
        load_config(Run, overrides=["epochs.x=3"])
    assert isinstance(e.value, UserError)


def test_a_stray_path_argument_gets_a_glob_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not of the form key=value$"):
        load_config(Run, overrides=["epochs"])
    shard = tmp_path / "sa_000001.tar"
    shard.touch()
    for stray in (str(shard), "shards/sa_000002.tar"):
        with pytest.raises(ConfigError) as e:
            load_config(Run, overrides=["epochs=3", stray])
        assert f"override {stray!r} is not of the form key=value" in str(e.value)
        assert "quote it ('shards/sa_*.tar')" in str(e.value)


def test_wrong_types_name_key_expected_type_and_value() -> None:
    cases = {
        "epochs=abc": "epochs: expected int, got str 'abc'",
        "amp=3": "amp: expected bool, got int 3",
        "scale=true": "scale: expected float, got bool True",
        "mode=c": "mode: expected one of 'a', 'b', got 'c'",
        "inner.betas=[1]": "inner.betas: expected 2 values",
        "sizes=[1, x]": "sizes[1]: expected int, got str 'x'",
        "limit=1.5": "limit: expected int | None, got float 1.5",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError) as e:
            load_config(Run, overrides=[override])
        assert message in str(e.value), (override, str(e.value))


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    src = _yaml(tmp_path / "c.yaml", "epochs: x\nbogus: 1\ninner:\n  lr: fast\n")
    with pytest.raises(ConfigError) as e:
        load_config(Run, src, ["amp=maybe", "noequals"])
    problems = e.value.problems
    assert len(problems) == 5, problems
    text = str(e.value)
    for part in ("bogus", "epochs: expected int", "inner.lr: expected float", "amp:", "noequals"):
        assert part in text
    assert str(src) in text


def test_post_init_checks_run_after_overrides(tmp_path: Path) -> None:
    src = _yaml(tmp_path / "c.yaml", "epochs: 5\n")
    with pytest.raises(ConfigError, match="epochs must be >= 1, got 0"):
        load_config(Run, src, ["epochs=0"])
    assert load_config(Run, src, ["epochs=2"]).epochs == 2


def test_round_trip_through_config_yaml(tmp_path: Path) -> None:
    cfg = Run(
        name="1e5",  # would read back as a float if written unquoted
        epochs=7,
        amp=True,
        mode="b",
        limit=3,
        sizes=[5],
        extra={"a": [1, 2], "b": {"c": None}, "d": "yes"},
        inner=Inner(lr=1e-7, betas=(0.1, 1.0 / 3.0)),
        scale=float("inf"),
    )
    path = save_config(cfg, tmp_path)
    assert path == tmp_path / CONFIG_FILENAME
    assert load_config(Run, path) == cfg
    assert [p.name for p in tmp_path.iterdir()] == [CONFIG_FILENAME]  # no temporary left
    train = TrainConfig(output_dir="x", precision="bf16", clip_grad=1.0)
    save_config(train, tmp_path / "train.yaml")
    assert load_config(TrainConfig, tmp_path / "train.yaml") == train
    assert dump_config(train).startswith("output_dir: x\n")


def test_registered_names(tmp_path: Path) -> None:
    (tmp_path / "toy").mkdir()
    _yaml(tmp_path / "toy" / "fast.yaml", "epochs: 2\n")
    _yaml(tmp_path / "toy" / "slow.yaml", "epochs: 200\n")
    assert config_names("toy", tmp_path) == ["fast", "slow"]
    assert config_names("other", tmp_path) == []
    assert load_config(Run, "fast", root=tmp_path).epochs == 2  # kind from Run.CONFIG_KIND
    with pytest.raises(ConfigError, match=r"unknown toy config 'fsat' \(did you mean 'fast'\?\); "):
        load_config(Run, "fsat", root=tmp_path)
    with pytest.raises(ConfigError, match="config file .*nope.yaml not found"):
        load_config(Run, str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Run, _yaml(tmp_path / "list.yaml", "- 1\n"))


def test_train_config_overrides_and_checks() -> None:
    cfg = load_config(
        TrainConfig, overrides=["optim.lr=1e-3", "schedule.kind=linear", "precision=bfloat16"]
    )
    assert cfg.optim.lr == 1e-3 and cfg.schedule.kind == "linear" and cfg.precision == "bfloat16"
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        load_config(TrainConfig, overrides=["precision=fp8"])
    # checks of sibling groups are all reported (the parent's own check needs valid groups)
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, overrides=["optim.layer_decay=2", "schedule.warmup_epochs=-1"])
    assert [p.split(":")[0] for p in e.value.problems] == ["optim", "schedule"]


# ------------------------------------------------------------------------- command line


def _parser(fields: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    add_config_arguments(p, Run, fields=fields)
    return p


def test_help_shows_every_field_description_and_default() -> None:
    text = _parser().format_help()
    docs = field_docs(Run)
    assert docs["epochs"] == "Passes over the data."
    assert field_docs(Inner)["lr"] == "Learning rate of the group."
    for flag in ("--epochs", "--amp", "--no-amp", "--inner.lr", "--inner.betas", "--config"):
        assert flag in text
    flat = " ".join(text.split())
    for doc in (
        "Passes over the data. (int, default: 10)",
        "Learning rate of the group.",
        "KEY=VALUE",
    ):
        assert doc in flat
    assert "(float, default: 0.5)" in flat  # the parent's default for the nested group


def test_precedence_defaults_yaml_flags_overrides(tmp_path: Path) -> None:
    src = _yaml(tmp_path / "c.yaml", "epochs: 5\ninner:\n  lr: 0.2\n")
    p = _parser()

    def resolve(*argv: str) -> Run:
        return config_from_args(Run, p.parse_args(list(argv)))

    assert resolve().epochs == 10
    assert resolve("--config", str(src)).epochs == 5
    assert resolve("--config", str(src), "--epochs", "6").epochs == 6
    assert resolve("--config", str(src), "--epochs", "6", "epochs=7").epochs == 7
    cfg = resolve("--config", str(src), "--inner.lr", "0.3", "--amp", "--sizes", "3,4")
    assert cfg.inner.lr == 0.3 and cfg.amp is True and cfg.sizes == [3, 4]
    assert resolve("--config", str(src)).inner.lr == 0.2  # an unset flag never hides YAML
    with pytest.raises(ConfigError) as e:
        resolve("--epochs", "x", "inner.lr=y")
    assert len(e.value.problems) == 2


def test_flag_subset_and_choices(tmp_path: Path) -> None:
    p = _parser(fields=("epochs", "mode", "inner"))
    text = p.format_help()
    assert "--epochs" in text and "--inner.lr" in text and "--name" not in text
    args = p.parse_args(["--mode", "b", "name=x"])
    cfg = config_from_args(Run, args)
    assert cfg.mode == "b" and cfg.name == "x"
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "c"])
    with pytest.raises(ValueError, match="no field"):
        _parser(fields=("nope",))
