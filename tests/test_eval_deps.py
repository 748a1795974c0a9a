"""Without the ``eval`` extra (pycocotools, lvis, scipy) the harness says what to install."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from esam.utils.deps import MissingDependencyError, require


def test_require_imports_installed_modules() -> None:
    assert require("json").dumps([1]) == "[1]"
    assert require("os.path").join("a", "b") == str(Path("a", "b"))


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'esam\[eval\]'") as e:
        require("pycocotools.mask")
    assert isinstance(e.value, ImportError) and e.value.extra == "eval"
    assert e.value.name == "pycocotools.mask"
    with pytest.raises(ImportError, match=r"pip install 'esam\[sam\]'"):
        require("no_such_package_for_esam_tests.sub", extra="sam")


def test_missing_module_inside_an_installed_package_is_not_masked(tmp_path: Path) -> None:
    """A broken installation (an import failing inside the package) keeps its own error."""
    pkg = tmp_path / "esam_broken_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import esam_missing_dependency_of_the_package\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ModuleNotFoundError) as e:
            require("esam_broken_pkg")
        assert not isinstance(e.value, MissingDependencyError)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("esam_broken_pkg", None)


def test_harness_without_the_eval_extra_raises_a_clear_import_error(tmp_path: Path) -> None:
    """In a fresh interpreter that cannot import pycocotools, lvis or scipy: the modules import,
    and each use stops with an ImportError naming ``pip install 'esam[eval]'``."""
    from esam.data.synthetic import sample_paths

    ann, img = sample_paths()
    lvis = tmp_path / "lvis.json"  # the sample in LVIS format
    data = json.loads(Path(ann).read_text())
    for c in data["categories"]:
        c["frequency"] = "f"
    for im in data["images"]:
        im.update(neg_category_ids=[], not_exhaustive_category_ids=[])
    lvis.write_text(json.dumps(data))
    script = textwrap.dedent(
        f"""
        import sys
        for name in ("pycocotools", "pycocotools.mask", "pycocotools.coco",
                     "pycocotools.cocoeval", "lvis", "scipy", "scipy.ndimage"):
            sys.modules[name] = None  # import of these now fails as if not installed
        import numpy as np
        from esam.data import coco as data, masks, prompts  # no import-time dependency
        from esam.eval import instseg, zeroshot
        checks = {{
            "load_api": lambda: data.load_api("coco", {str(ann)!r}),
            "load_lvis": lambda: data.load_api("lvis", {str(lvis)!r}),
            "decode_mask": lambda: masks.decode_mask([[0, 0, 4, 0, 4, 4]], 8, 8),
            "center_click": lambda: prompts.center_click(np.ones((4, 4), bool)),
            "run_zeroshot": lambda: zeroshot.run_zeroshot(zeroshot.ZeroShotConfig(
                model="oracle", dataset="coco", annotations={str(ann)!r},
                images={str(img)!r}, workers=0, progress=False)),
        }}
        for name, call in checks.items():
            try:
                call()
            except ImportError as e:
                assert "pip install 'esam[eval]'" in str(e), (name, str(e))
                print(name, "ok:", e)
            else:
                raise AssertionError(name + " did not raise")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count(" ok: ") == 5
    assert "pycocotools" in proc.stdout and "lvis" in proc.stdout and "scipy" in proc.stdout


def test_lvis_evaluation_without_lvis(monkeypatch: pytest.MonkeyPatch) -> None:
    from esam.eval.instseg import evaluate_detections

    monkeypatch.setitem(sys.modules, "lvis", None)
    result = {"image_id": 1, "category_id": 1, "score": 1.0, "segmentation": {}}
    with pytest.raises(ImportError, match=r"'lvis' is not installed.*esam\[eval\]"):
        evaluate_detections(object(), [result], "lvis")
    assert not hasattr(np, "float") or np.lib.NumpyVersion(np.__version__) < "1.24.0"


def test_missing_scipy_in_a_dataloader_worker_still_names_the_extra() -> None:
    """Centre clicks are computed in DataLoader workers; the error survives the re-raise."""
    from esam.data.synthetic import sample_paths

    ann, img = sample_paths()
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["scipy"] = sys.modules["scipy.ndimage"] = None  # scipy "not installed"
        from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot
        cfg = ZeroShotConfig(model="oracle", dataset="coco", annotations={str(ann)!r},
                             images={str(img)!r}, prompt="point1", click="center",
                             limit_images=1, workers=1, progress=False)
        try:
            run_zeroshot(cfg)
        except ImportError as e:
            assert "pip install 'esam[eval]'" in str(e), str(e)
            print("ok:", type(e).__name__)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "ok: MissingDependencyError" in proc.stdout, (
        proc.stdout[-3000:] + proc.stderr[-3000:]
    )
