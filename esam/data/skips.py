"""Why an instance, image or detection is left out of a run: the shared vocabulary of counts.

Nothing is dropped silently anywhere in esam: every instance or image left out is counted under
one of these reasons, and the counts go into the results file.
"""

from __future__ import annotations

from collections import Counter

# instance-level skip reasons (counts of instances)
SKIP_CROWD = "crowd"
SKIP_AREA = "area_lt_1"
SKIP_NO_SEGMENTATION = "no_segmentation"
SKIP_SHORT_POLYGON = "polygon_lt_3_points"
SKIP_BAD_POLYGON = "invalid_polygon"
SKIP_BAD_RLE = "invalid_rle"
SKIP_ZERO_BOX = "zero_size_box"
SKIP_BOX_OUTSIDE = "box_outside_image"
SKIP_EMPTY_MASK = "empty_mask"
SKIP_UNKNOWN_IMAGE = "annotation_unknown_image"
SKIP_IN_SKIPPED_IMAGE = "instance_in_skipped_image"
# image-level skip reasons (counts of images)
SKIP_IMAGE_MISSING = "image_missing"
SKIP_IMAGE_CORRUPT = "image_corrupt"
#: decodable, but not usable as RGB: too large for PIL's limit, or grey values of no standard
#: range (32-bit integer beyond 16 bits, floating point)
SKIP_IMAGE_UNSUPPORTED = "image_unsupported"
SKIP_IMAGE_SIZE = "image_size_mismatch"
#: Every image-level skip reason (the others count instances or detections).
IMAGE_SKIP_REASONS = (
    SKIP_IMAGE_MISSING,
    SKIP_IMAGE_CORRUPT,
    SKIP_IMAGE_UNSUPPORTED,
    SKIP_IMAGE_SIZE,
)


def n_images_skipped(skips: Counter[str] | dict[str, int]) -> int:
    """Images left out of a run, summed over the image-level skip reasons."""
    return sum(int(skips.get(r, 0)) for r in IMAGE_SKIP_REASONS)
