"""Pybullet scenes: a target and a few distractors settled on a checker floor, rendered headless.

Every render rebuilds its scene from `np.random.default_rng`-style seed sequences keyed by
(seed, object_id, view), so pixels never depend on what the client rendered before (Beam
workers render in arbitrary orders). The legacy path (`Renderer(fast=False)`) resets the
simulation and loads every URDF per render. The fast path (the default) keeps the floor and,
per object id, the collision and visual shapes that loadURDF would build; a render creates its
bodies from them, and removes them afterwards, so the world between renders is the floor alone.
Overlapping pairs are sorted (deterministicOverlappingPairs) so the contact order of a scene
never depends on what was created or removed before it.
"""
import math

import numpy as np
from tqdm import tqdm

from rand_ensemble.data.bullet import p
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.data.scene import (NUM_OBJECTS, POOL_OBJECT_IDS, TEST_OBJECT_IDS,  # noqa: F401
                                        broken_object_ids, check_count, check_object_id,
                                        drop, load_urdf, make_shapes, reset_world, rotate,
                                        sample_scene, settle)
from rand_ensemble.evaluate.one_of_ten import EXAMPLE_SIZE

COLOUR_MODES = ("object", "random")

_FOV = 40.0                             # degrees, square image
_NEAR, _FAR = 0.01, 10.0
FAST_OVERSAMPLE, LEGACY_OVERSAMPLE = 2, 4   # TinyRenderer pixels per output pixel, per side
_LIGHT = dict(lightDirection=[0.4, 0.6, 1.0], lightAmbientCoeff=0.6,
              lightDiffuseCoeff=0.5, lightSpecularCoeff=0.1, shadow=1)


def _floats(xs):
    """Plain Python floats, so camera dicts are JSON-serialisable."""
    return [float(x) for x in xs]


class Renderer:
    """Renders (object_id, view, seed) -> uint8 (hw, hw, 3) with one pybullet DIRECT client.

    Args:
        hw: output image side in pixels (>= 8).
        colour: "object" (the URDF colours) or "random" (a saturated colour per body and view).
        oversample: TinyRenderer pixels per output pixel per side, area-averaged down; None
            means FAST_OVERSAMPLE on the fast path and LEGACY_OVERSAMPLE on the legacy one.
        fast: True (default) keeps the floor and each object's shapes in the client and sorts
            contact pairs (2.3x renders/s/core with its default oversampling, measured by
            scripts/bench_render.py); False is the previous path (reset and loadURDF per render).
    """

    def __init__(self, hw: int = 32, colour: str = "object", oversample: int | None = None,
                 fast: bool = True):
        self.hw = check_count("hw", hw, 8)
        self.fast = bool(fast)
        if oversample is None:
            oversample = FAST_OVERSAMPLE if self.fast else LEGACY_OVERSAMPLE
        self.oversample = check_count("oversample", oversample, 1)
        if colour not in COLOUR_MODES:
            raise RandEnsembleError(f"colour must be one of {COLOUR_MODES}, got {colour!r}")
        self.colour = colour
        self.client = p.connect(p.DIRECT)
        self._proj = p.computeProjectionMatrixFOV(_FOV, 1.0, _NEAR, _FAR,
                                                  physicsClientId=self.client)
        self._shapes = {}               # fast path: object id -> its shapes in this client
        if self.fast:
            reset_world(self.client)   # the floor stays; scene bodies come and go
            p.setPhysicsEngineParameter(deterministicOverlappingPairs=1,
                                        physicsClientId=self.client)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Disconnect the pybullet client; safe to call twice."""
        if self.client is not None:
            p.disconnect(physicsClientId=self.client)
            self.client = None

    def render_view(self, object_id, view, seed):
        """Render one view: -> (uint8 (hw, hw, 3), camera dict of plain floats/ints/lists)."""
        image, camera, _ = self._render(object_id, view, seed)
        return image, camera

    def _render(self, object_id, view, seed, target_rgba=None):
        """Render -> (image, camera, bool (S, S) target mask); target_rgba repaints the target."""
        scene = sample_scene(*self._check_key(object_id, view, seed))
        if not self.fast:
            reset_world(self.client)
        bodies = []                                     # (body id, (V, 3) local vertices)
        try:
            self._place(scene, target_rgba, bodies)
            settle(self.client)
            image, seg, framing = self._shoot(bodies[0], scene)
            return image, self._record(scene, framing, bodies), seg == bodies[0][0]
        finally:
            if self.fast:                               # back to the floor alone
                for body, _ in bodies:
                    p.removeBody(body, physicsClientId=self.client)

    def _check_key(self, object_id, view, seed):
        """Validated (object_id, view, seed) ints; raises on a missing or broken mesh, or closed."""
        object_id = check_object_id(object_id)
        if object_id in broken_object_ids():
            # TinyRenderer can spin forever on NaN geometry, so refuse instead of hanging.
            raise RandEnsembleError(
                f"object id {object_id} has a broken mesh (NaN vertices in its OBJ file)")
        view = check_count("view", view, 0)
        seed = check_count("seed", seed, 0)
        if self.client is None:
            raise RandEnsembleError("Renderer is closed")
        return object_id, view, seed

    def _place(self, scene, target_rgba, bodies):
        """Load the scene's bodies (target first), orient and place them; appends to bodies."""
        placed = []                                         # (x, y, radius) footprints
        for k, oid in enumerate(scene["object_ids"]):
            body = self._body(oid) if self.fast else load_urdf(self.client, oid)
            bodies.append(body)
            rgba = None
            if k == 0 and target_rgba is not None:
                rgba = list(target_rgba)
            elif self.colour == "random":
                rgba = _floats(scene["colours"][k]) + [1.0]
            drop(self.client, body, scene, placed, rgba)

    def _body(self, oid):
        """A new body of object oid from shapes made once per client: -> (body id, (V, 3))."""
        if oid not in self._shapes:
            self._shapes[oid] = make_shapes(self.client, oid)
        collision, visual, dynamics, verts = self._shapes[oid]
        body = p.createMultiBody(dynamics["mass"], collision, visual, physicsClientId=self.client)
        p.changeDynamics(body, -1, **{k: v for k, v in dynamics.items() if k != "mass"},
                         physicsClientId=self.client)
        return body, verts

    def _shoot(self, body, scene):
        """Frame the target and render: -> (uint8 (hw, hw, 3), seg (S, S), (target, eye, dist))."""
        cid = self.client
        framing = _frame(cid, *body, scene["yaw"], scene["pitch"], scene["fill"])
        target, eye, _ = framing
        view_matrix = p.computeViewMatrix(eye.tolist(), target.tolist(), [0, 0, 1],
                                          physicsClientId=cid)
        size = self.hw * self.oversample
        _, _, pixels, _, seg = p.getCameraImage(size, size, view_matrix, self._proj,
                                              renderer=p.ER_TINY_RENDERER,
                                              physicsClientId=cid, **_LIGHT)
        rgb = np.asarray(pixels, np.uint8).reshape(size, size, 4)[..., :3]             # (S, S, 3)
        return _block_mean(rgb, self.oversample), np.asarray(seg).reshape(size, size), framing

    def _record(self, scene, framing, bodies):
        """The camera dict: the key, camera pose and scene contents as plain JSON values."""
        target, eye, distance = framing
        body_rgba = [_floats(p.getVisualShapeData(b, physicsClientId=self.client)[0][7])
                     for b, _ in bodies]
        return {
            "object_id": scene["object_id"], "view": scene["view"], "seed": scene["seed"],
            "hw": self.hw, "colour": self.colour, "oversample": self.oversample, "fast": self.fast,
            # degrees; pitch above the horizon
            "yaw": math.degrees(scene["yaw"]), "pitch": math.degrees(scene["pitch"]),
            "distance": distance,
            "target": _floats(target), "eye": _floats(eye), "fov": _FOV,
            "near": _NEAR, "far": _FAR, "distractor_ids": scene["object_ids"][1:],
            "target_rgba": body_rgba[0], "distractor_rgba": body_rgba[1:],
        }


def _frame(cid, body, local, yaw, pitch, fill):
    """Camera (target, eye, distance) at yaw/pitch whose frame the body's mesh spans by `fill`."""
    pos, orn = p.getBasePositionAndOrientation(body, physicsClientId=cid)
    verts = rotate(cid, local, orn) + pos                                       # (V, 3) world
    target = 0.5 * (verts.min(0) + verts.max(0))
    back = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw),
                     math.sin(pitch)])                                           # target -> eye
    right = _cross(-back, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    up = _cross(right, -back)
    w = verts - target                                                           # (V, 3)
    depth = w @ -back
    # Exact perspective fit of the mesh (not its bounding sphere), so thin objects fill the frame:
    # a vertex projects inside `fill` of the half-frame iff
    # distance >= half-extent / (fill * tan(fov / 2)) - depth.
    half = np.maximum(np.abs(w @ right), np.abs(w @ up))
    distance = float(np.max(half / (fill * math.tan(math.radians(_FOV) / 2)) - depth))
    distance = max(distance, float(np.max(-depth)) + 2 * _NEAR)
    if not math.isfinite(distance):
        raise RandEnsembleError("degenerate mesh: no finite camera distance")
    return target, target + distance * back, distance


def _cross(a, b):
    """np.cross of two (3,) vectors, term for term (so bit for bit), without its overhead."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                     a[0] * b[1] - a[1] * b[0]])


def _block_mean(rgb, factor):
    """Area-downsample: uint8 (S, S, 3) -> uint8 (S/f, S/f, 3), exact integer rounding."""
    s = rgb.shape[0] // factor
    blocks = rgb.reshape(s, factor, s, factor, 3).astype(np.uint32).sum(axis=(1, 3))
    n = factor * factor
    return ((blocks + n // 2) // n).astype(np.uint8)


def plan_test_set(num_examples, seed, object_ids=TEST_OBJECT_IDS):
    """Which (object, view) fills each slot: -> ids int32 (N, 11), views int64 (N, 11)."""
    num_examples = check_count("num_examples", num_examples, 1)
    seed = check_count("seed", seed, 0)
    try:
        ids = sorted({check_object_id(i) for i in object_ids} - broken_object_ids())
    except TypeError:
        raise RandEnsembleError(
            f"object_ids must be an iterable of ids, got {object_ids!r}") from None
    if len(ids) < EXAMPLE_SIZE - 1:
        raise RandEnsembleError(
            f"object_ids must hold at least {EXAMPLE_SIZE - 1} distinct ids, got {len(ids)}")
    plan = np.zeros((num_examples, EXAMPLE_SIZE), np.int32)
    for n in range(num_examples):
        # Per-example streams: example n is the same whatever num_examples is.
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(n,)))
        chosen = rng.choice(ids, EXAMPLE_SIZE - 1, replace=False)   # anchor + nine others
        plan[n] = np.concatenate([chosen[:1], chosen])
    # Every slot gets its own view number, so anchor and positive are different views.
    views = np.arange(num_examples * EXAMPLE_SIZE, dtype=np.int64)
    views = views.reshape(num_examples, EXAMPLE_SIZE)
    return plan, views


def render_test_set(num_examples, seed, hw=32, colour="object", object_ids=TEST_OBJECT_IDS,
                    progress=False):
    """Render N examples: -> images uint8 (N, 11, hw, hw, 3), object_ids int32 (N, 11)."""
    ids, views = plan_test_set(num_examples, seed, object_ids)
    with Renderer(hw=hw, colour=colour) as renderer:
        images = np.zeros(ids.shape + (renderer.hw, renderer.hw, 3), np.uint8)
        slots = list(np.ndindex(*ids.shape))
        if progress:
            slots = tqdm(slots, desc="render", unit="img")
        for n, k in slots:
            images[n, k] = renderer.render_view(int(ids[n, k]), int(views[n, k]), seed)[0]
    return images, ids
