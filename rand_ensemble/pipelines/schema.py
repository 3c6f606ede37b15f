"""Pyarrow schemas of the jobs' Parquet outputs, and the row builders that fill them."""
import json

import pyarrow as pa

RENDERS = pa.schema([
    ("image_id", pa.string()),          # "o{object:05d}_v{view:04d}_s{seed}": sorts by object, view
    ("object_id", pa.int64()),
    ("view", pa.int64()),
    ("seed", pa.int64()),
    ("height", pa.int64()),
    ("width", pa.int64()),
    ("image", pa.binary()),             # raw uint8 (height, width, 3), row-major
    ("colour", pa.string()),
    ("yaw", pa.float64()),              # camera: degrees
    ("pitch", pa.float64()),
    ("distance", pa.float64()),         # metres, eye to target
    ("fov", pa.float64()),
    ("target", pa.list_(pa.float64())),  # (3,) look-at point
    ("eye", pa.list_(pa.float64())),     # (3,) camera position
    ("camera_json", pa.string()),       # the renderer's full camera/scene dict
])

PAIRS = pa.schema([
    ("image_id_a", pa.string()),
    ("image_id_b", pa.string()),
    ("score", pa.float32()),            # ensemble similarity / M
    ("rank", pa.int32()),               # 1 = nearest
])

# Columns the weak-label job reads back.
RENDER_INPUT_COLUMNS = ["image_id", "object_id", "view", "seed", "height", "width", "image"]


def image_id(object_id, view, seed):
    """Stable, sortable id of one render."""
    return f"o{object_id:05d}_v{view:04d}_s{seed}"


def render_row(object_id, view, seed, image, camera):
    """One RENDERS row from Renderer.render_view's (uint8 (H, W, 3), camera dict)."""
    h, w, _ = image.shape
    return {
        "image_id": image_id(object_id, view, seed), "object_id": int(object_id),
        "view": int(view), "seed": int(seed), "height": int(h), "width": int(w),
        "image": image.tobytes(), "colour": camera.get("colour", ""),
        "yaw": camera["yaw"], "pitch": camera["pitch"], "distance": camera["distance"],
        "fov": camera["fov"], "target": list(camera["target"]), "eye": list(camera["eye"]),
        "camera_json": json.dumps(camera, sort_keys=True),
    }


def failure_line(record, stage, error):
    """A dead-letter record as one JSON line: the input, where it failed, and the error text."""
    if isinstance(error, BaseException):
        message = getattr(error, "description", None) or f"{type(error).__name__}: {error}"
    else:
        message = str(error)
    return json.dumps({"input": record, "stage": stage, "error": message}, sort_keys=True)
