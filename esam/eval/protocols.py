"""Named evaluation protocols: the prompt-selection rules behind a published zero-shot number.

Papers report zero-shot mIoU and AP under different rules (where a click goes, whether crowd
regions count, which of three masks is kept, whether boxes are clipped, ...), and numbers from
different rules are not comparable. A :class:`Protocol` collects every such rule under a name;
``--protocol NAME`` selects one, individual switches (``--click``, ``--include-crowd``, ...)
still override it, and the results record both the preset and the overrides.

Presets (details and sources in ``docs/protocols.md``):

* ``efficientsam``: the EfficientSAM paper's Table 4 wording (clicks sampled at random inside
  the ground-truth mask, all positive; 3 clicks drawn at once), annotation boxes, crowd regions
  left out, the most confident of the multimask outputs. esam's defaults.
* ``efficientvit-sam``: EfficientViT-SAM's evaluation code (``applications/efficientvit_sam``):
  RITM's clicker (first click at the distance-transform maximum of the mask, later clicks on
  the deeper error region, a negative click at pixel (0, 0) once no error is left), crowd
  regions included, raw annotation/detector boxes (not clipped), multimask output with the most
  confident mask for boxes and clicks, size buckets inclusive at both ends.
* ``sam``: the Segment Anything paper's point protocol (centre click, then error-region clicks
  as in RITM; the most confident of three masks for one prompt, the single output once there
  are several clicks), crowd regions left out, boxes clipped to the image.

This module imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from esam.errors import InputError

#: Click rules for one-click prompts and for multi-click prompts.
SINGLE_CLICK_MODES = ("random", "center")
MULTI_CLICK_MODES = ("random", "iterative")
#: What a later iterative click is once the previous mask has no error left.
NO_ERROR_CLICKS = ("pad", "negative-origin")
#: How instances are put into size buckets by area.
SIZE_BUCKET_RULES = ("coco", "inclusive")


@dataclass(frozen=True)
class Protocol:
    """Every rule that changes a zero-shot number, under one name.

    Attributes:
        name: preset name (``--protocol``).
        description: one line for ``--help`` and the docs.
        source: where the rules come from.
        click: click rule of one-click prompts (``random`` or ``center``).
        multi_click: click rule of several clicks (``random``: all drawn at once, or
            ``iterative``: first at the centre, later ones on the previous error).
        no_error_click: what a later iterative click is when the previous mask is exact:
            ``pad`` (the point (-1, -1) with label -1, which every model ignores) or
            ``negative-origin`` (a negative click at pixel (0, 0), as RITM's clicker does).
        include_crowd: evaluate ``iscrowd`` regions.
        mask_choice: ``score`` (most confident of the multimask outputs), ``single``,
            ``oracle`` or ``score-single`` (score for one box or click, single for several).
        box_source: ground-truth box prompts from the annotation ``bbox`` or the mask's box.
        clip_boxes: clip box prompts to the image before the model sees them.
        size_buckets: ``coco`` (small < 32^2 <= medium < 96^2 <= large) or ``inclusive``
            (small <= 32^2 <= medium <= 96^2 <= large: a boundary area counts in both).
    """

    name: str
    description: str
    source: str
    click: str
    multi_click: str
    no_error_click: str
    include_crowd: bool
    mask_choice: str
    box_source: str
    clip_boxes: bool
    size_buckets: str

    def settings(self) -> dict[str, Any]:
        """The rules as a dict of setting name -> value (no name, description or source)."""
        skip = {"name", "description", "source"}
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip
        }


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="efficientsam",
            description="EfficientSAM paper: random clicks in the mask, crowd excluded",
            source="EfficientSAM (Xiong et al., CVPR 2024), Section 5.2 and Table 4",
            click="random",
            multi_click="random",
            no_error_click="pad",
            include_crowd=False,
            mask_choice="score",
            box_source="bbox",
            clip_boxes=True,
            size_buckets="coco",
        ),
        Protocol(
            name="efficientvit-sam",
            description="EfficientViT-SAM's evaluation code: RITM clicks, crowd included",
            source=(
                "github.com/mit-han-lab/efficientvit, applications/efficientvit_sam/"
                "eval_efficientvit_sam_model.py and sam_eval_utils.py"
            ),
            click="center",
            multi_click="iterative",
            no_error_click="negative-origin",
            include_crowd=True,
            mask_choice="score",
            box_source="bbox",
            clip_boxes=False,
            size_buckets="inclusive",
        ),
        Protocol(
            name="sam",
            description="Segment Anything paper: centre click, then error-region clicks",
            source=(
                "Segment Anything (Kirillov et al., ICCV 2023), Section 7.1 and Appendices A "
                "and D.1"
            ),
            click="center",
            multi_click="iterative",
            no_error_click="pad",
            include_crowd=False,
            mask_choice="score-single",
            box_source="bbox",
            clip_boxes=True,
            size_buckets="coco",
        ),
    )
}
#: The preset names, as a type (command-line choices are generated from it).
ProtocolName = Literal["efficientsam", "efficientvit-sam", "sam"]
DEFAULT_PROTOCOL: ProtocolName = "efficientsam"


def get_protocol(name: str) -> Protocol:
    """The preset called ``name``.

    Raises:
        ValueError: unknown name (the message lists the presets).
    """
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise InputError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}") from None


def resolve_settings(
    name: str, chosen: dict[str, Any], *, n_clicks: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fill the settings a run left unset from a preset, and say which ones differ from it.

    Args:
        name: the preset.
        chosen: setting name -> value given by the user, ``None`` for "from the preset". The
            ``click`` setting stands for the click rule of the run's prompt: the preset's
            ``click`` for one click, its ``multi_click`` for several.
        n_clicks: clicks of the run's prompt (``None`` for box prompts).

    Returns:
        (resolved settings, overrides): every setting of the preset with the user's values
        applied (``click`` resolved for the prompt), and the user's values that differ from the
        preset's.

    Raises:
        ValueError: unknown preset or setting name.
    """
    preset = get_protocol(name).settings()
    preset_click = preset.pop("multi_click") if n_clicks and n_clicks > 1 else preset["click"]
    preset.pop("multi_click", None)
    preset["click"] = preset_click
    unknown = sorted(set(chosen) - set(preset))
    if unknown:
        raise InputError(f"unknown protocol settings {unknown}; known: {sorted(preset)}")
    resolved = dict(preset)
    overrides: dict[str, Any] = {}
    for key, value in chosen.items():
        if value is None:
            continue
        resolved[key] = value
        if value != preset[key]:
            overrides[key] = value
    return resolved, overrides
