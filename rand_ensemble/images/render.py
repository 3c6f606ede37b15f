"""Pybullet scenes: a target and a few distractors settled on a checker floor, rendered headless.

Every render rebuilds its scene from `np.random.default_rng`-style seed sequences keyed by
(seed, object_id, view), in a freshly reset simulation, so pixels never depend on what the
client rendered before (Beam workers render in arbitrary orders).
"""
import colorsys
import functools
import math
import os

import numpy as np
import pybullet as p
import pybullet_data
from tqdm import tqdm

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.metrics import EXAMPLE_SIZE

NUM_OBJECTS = 1000                      # ids 0..999 have URDFs
TEST_OBJECT_IDS = range(900, 1000)      # default id range for test sets
POOL_OBJECT_IDS = range(0, 900)         # training pools, disjoint from the test objects
COLOUR_MODES = ("object", "random")

_DATA = pybullet_data.getDataPath()
_PLANE = os.path.join(_DATA, "plane100.urdf")
_URDFS = [os.path.join(_DATA, "random_urdfs", f"{i:03d}", f"{i:03d}.urdf")
          for i in range(NUM_OBJECTS)]

_FOV = 40.0                             # degrees, square image
_NEAR, _FAR = 0.01, 10.0
_FILL = (0.45, 0.7)                     # target's widest extent / frame width
_PITCH = (20.0, 50.0)                   # degrees above the horizon
_NUM_DISTRACTORS = (2, 4)
_BEHIND_ARC = 0.9                       # radians either side of straight behind the target
_FLOOR_SCALE = 0.1                      # 0.1 m checks: the size of the objects
_RING = (0.1, 0.22)                     # distractor distance from the target, metres
_TIME_STEP = 1.0 / 60.0                 # coarse but stable for 0.1 m objects dropped 2 mm
_SETTLE_STEPS = 24                      # 0.4 s: long enough to tip over, short enough to be fast
_SETTLE_MIN_STEPS = 6                   # fast path: never stop before the bodies have landed
_REST_SPEED, _REST_SPIN = 0.005, 0.05   # fast path: m/s and rad/s below which a body is at rest
FAST_OVERSAMPLE, LEGACY_OVERSAMPLE = 2, 4   # TinyRenderer pixels per output pixel, per side
_LIGHT = dict(lightDirection=[0.4, 0.6, 1.0], lightAmbientCoeff=0.6,
              lightDiffuseCoeff=0.5, lightSpecularCoeff=0.1, shadow=1)


def _check_object_id(object_id):
    """Return object_id as an int, or raise if random_urdfs has no URDF for it."""
    if isinstance(object_id, bool) or not isinstance(object_id, (int, np.integer)) \
            or not 0 <= object_id < NUM_OBJECTS:
        raise RandEnsembleError(
            f"no URDF for object id {object_id}: random_urdfs has ids 0..{NUM_OBJECTS - 1}")
    return int(object_id)


def _check_count(name, value, minimum):
    """Return value as an int >= minimum, or raise naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise RandEnsembleError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@functools.lru_cache(maxsize=None)
def _distractor_pool(test):
    """Ids distractors come from, int64 (K,): test objects never appear in training scenes."""
    pool = np.asarray(TEST_OBJECT_IDS if test else POOL_OBJECT_IDS)
    pool = pool[~np.isin(pool, list(broken_object_ids()))]
    pool.flags.writeable = False
    return pool


@functools.lru_cache(maxsize=None)
def broken_object_ids():
    """Ids whose OBJ mesh has non-finite vertices (random_urdfs/168 is all NaN): never rendered."""
    broken = set()
    for oid, urdf in enumerate(_URDFS):
        with open(urdf[:-len(".urdf")] + ".obj") as f:
            if any(line.startswith("v ") and "nan" in line.lower() for line in f):
                broken.add(oid)
    return frozenset(broken)


def _floats(xs):
    """Plain Python floats, so camera dicts are JSON-serialisable."""
    return [float(x) for x in xs]


class Renderer:
    """Renders (object_id, view, seed) -> uint8 (hw, hw, 3) with one pybullet DIRECT client."""

    def __init__(self, hw=32, colour="object", oversample=None, fast=True):
        self.hw = _check_count("hw", hw, 8)
        self.fast = bool(fast)
        if oversample is None:
            oversample = FAST_OVERSAMPLE if self.fast else LEGACY_OVERSAMPLE
        self.oversample = _check_count("oversample", oversample, 1)
        if colour not in COLOUR_MODES:
            raise RandEnsembleError(f"colour must be one of {COLOUR_MODES}, got {colour!r}")
        self.colour = colour
        self.client = p.connect(p.DIRECT)
        self._proj = p.computeProjectionMatrixFOV(_FOV, 1.0, _NEAR, _FAR,
                                                  physicsClientId=self.client)
        self._shapes = {}               # fast path: object id -> its shapes in this client
        if self.fast:
            _reset_world(self.client)   # the floor stays; scene bodies come and go

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
            _reset_world(self.client)
        bodies = []                                     # (body id, (V, 3) local vertices)
        try:
            self._place(scene, target_rgba, bodies)
            _settle(self.client, [b for b, _ in bodies] if self.fast else None)
            image, seg, framing = self._shoot(bodies[0], scene)
            return image, self._record(scene, framing, bodies), seg == bodies[0][0]
        finally:
            if self.fast:                               # back to the floor alone
                for body, _ in bodies:
                    p.removeBody(body, physicsClientId=self.client)

    def _check_key(self, object_id, view, seed):
        """Validated (object_id, view, seed) ints; raises on a missing or broken mesh, or if closed."""
        object_id = _check_object_id(object_id)
        if object_id in broken_object_ids():
            # TinyRenderer can spin forever on NaN geometry, so refuse instead of hanging.
            raise RandEnsembleError(
                f"object id {object_id} has a broken mesh (NaN vertices in its OBJ file)")
        view = _check_count("view", view, 0)
        seed = _check_count("seed", seed, 0)
        if self.client is None:
            raise RandEnsembleError("Renderer is closed")
        return object_id, view, seed

    def _place(self, scene, target_rgba, bodies):
        """Load the scene's bodies (target first), orient and place them; appends to bodies."""
        placed = []                                         # (x, y, radius) footprints
        for k, oid in enumerate(scene["object_ids"]):
            body = self._body(oid) if self.fast else _load(self.client, oid)
            bodies.append(body)
            rgba = None
            if k == 0 and target_rgba is not None:
                rgba = list(target_rgba)
            elif self.colour == "random":
                rgba = _floats(scene["colours"][k]) + [1.0]
            _drop(self.client, body, scene, placed, rgba)

    def _body(self, oid):
        """A new body of object oid from shapes made once per client: -> (body id, (V, 3))."""
        if oid not in self._shapes:
            self._shapes[oid] = _make_shapes(self.client, oid)
        collision, visual, dynamics, verts = self._shapes[oid]
        body = p.createMultiBody(dynamics["mass"], collision, visual, physicsClientId=self.client)
        p.changeDynamics(body, -1, **{k: v for k, v in dynamics.items() if k != "mass"},
                         physicsClientId=self.client)
        return body, verts

    def _shoot(self, body, scene):
        """Frame the body and render: -> (uint8 (hw, hw, 3), seg (S, S), (target, eye, distance))."""
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
            "yaw": math.degrees(scene["yaw"]), "pitch": math.degrees(scene["pitch"]),
            "distance": distance,                               # degrees, pitch above horizon
            "target": _floats(target), "eye": _floats(eye), "fov": _FOV,
            "near": _NEAR, "far": _FAR, "distractor_ids": scene["object_ids"][1:],
            "target_rgba": body_rgba[0], "distractor_rgba": body_rgba[1:],
        }


def sample_scene(object_id, view, seed):
    """The scene's first random draws: -> dict of yaw, pitch, fill, object_ids, colours, rng.

    `rng` continues into placement (orientations, distractor spots). Colours come from their
    own stream, so geometry is identical in both colour modes; only colours differ.
    """
    scene_seq, colour_seq = np.random.SeedSequence([seed, object_id, view]).spawn(2)
    rng, colour_rng = np.random.default_rng(scene_seq), np.random.default_rng(colour_seq)
    yaw = rng.uniform(0.0, 2 * math.pi)
    pitch = math.radians(rng.uniform(*_PITCH))
    fill = rng.uniform(*_FILL)
    num_distractors = int(rng.integers(_NUM_DISTRACTORS[0], _NUM_DISTRACTORS[1] + 1))
    pool = _distractor_pool(object_id in TEST_OBJECT_IDS)
    pool = pool[pool != object_id]
    distractor_ids = [int(i) for i in rng.choice(pool, num_distractors, replace=False)]
    # Saturated colours of any hue, like the URDFs' own: uniform RGB is mostly greyish.
    hsv = colour_rng.uniform([0.0, 0.5, 0.4], [1.0, 1.0, 1.0], size=(1 + _NUM_DISTRACTORS[1], 3))
    return {"object_id": object_id, "view": view, "seed": seed, "yaw": yaw, "pitch": pitch,
            "fill": fill, "object_ids": [object_id] + distractor_ids,
            "colours": [colorsys.hsv_to_rgb(*c) for c in hsv], "rng": rng}


def _reset_world(cid):
    """A fresh world per render (gravity, time step, floor): the only state is what we build."""
    p.resetSimulation(physicsClientId=cid)
    p.setGravity(0, 0, -9.81, physicsClientId=cid)
    p.setTimeStep(_TIME_STEP, physicsClientId=cid)
    p.loadURDF(_PLANE, useFixedBase=True, globalScaling=_FLOOR_SCALE, physicsClientId=cid)


def _load(cid, oid):
    """loadURDF for object oid -> (body id, (V, 3) collision vertices in the body frame)."""
    try:
        body = p.loadURDF(_URDFS[oid], physicsClientId=cid)
    except p.error as e:
        raise RandEnsembleError(
            f"cannot load URDF for object id {oid}: {_URDFS[oid]} ({e})") from None
    return body, np.array(p.getMeshData(body, physicsClientId=cid)[1])


def _make_shapes(cid, oid):
    """Shapes and dynamics of object oid as loadURDF builds them: -> (collision, visual, dyn, verts)."""
    body, verts = _load(cid, oid)
    info = p.getDynamicsInfo(body, -1, physicsClientId=cid)
    _, _, kind, scale, path, _, _, rgba = p.getVisualShapeData(body, physicsClientId=cid)[0]
    p.removeBody(body, physicsClientId=cid)
    collision = p.createCollisionShape(kind, fileName=path.decode(), meshScale=scale,
                                       physicsClientId=cid)
    visual = p.createVisualShape(kind, fileName=path.decode(), meshScale=scale, rgbaColor=rgba,
                                 physicsClientId=cid)
    dynamics = {"mass": info[0], "lateralFriction": info[1], "localInertiaDiagonal": info[2],
                "restitution": info[5], "rollingFriction": info[6], "spinningFriction": info[7],
                "collisionMargin": info[11]}
    return collision, visual, dynamics, verts


def _drop(cid, body, scene, placed, rgba):
    """Orient (body id, local vertices) at random and set it on the floor at a free spot."""
    body, local = body
    rng = scene["rng"]
    quat = rng.normal(size=4)
    quat /= np.linalg.norm(quat)
    verts = _rotate(cid, local, quat)                                # (V, 3), body at the origin
    lo, hi = verts.min(0), verts.max(0)
    centre = 0.5 * (lo + hi)
    radius = float(np.max(np.linalg.norm((verts - centre)[:, :2], axis=1)))
    x, y = _spot(rng, scene["yaw"], radius, placed) if placed else (0.0, 0.0)
    placed.append((x, y, radius))
    # Lowest vertex 2 mm above the floor: the body starts resting and only has to tip over.
    pos = [x - centre[0], y - centre[1], 0.002 - lo[2]]
    p.resetBasePositionAndOrientation(body, pos, quat.tolist(), physicsClientId=cid)
    if rgba is not None:
        p.changeVisualShape(body, -1, rgbaColor=rgba, physicsClientId=cid)


def _spot(rng, yaw, radius, placed):
    """A distractor's (x, y): behind the target as seen from the camera, clear of `placed`."""
    # Behind the target so distractors rarely hide it; rejection sampling keeps footprints
    # apart so the physics starts without overlaps (the last try stands if all 20 overlap).
    for _ in range(20):
        angle = yaw + math.pi + rng.uniform(-_BEHIND_ARC, _BEHIND_ARC)
        dist = rng.uniform(*_RING)
        x, y = dist * math.cos(angle), dist * math.sin(angle)
        if all(math.hypot(x - px, y - py) > radius + pr for px, py, pr in placed):
            break
    return x, y


def _settle(cid, bodies=None):
    """Step the physics so dropped bodies come to rest: a fixed time, or while `bodies` move."""
    for step in range(_SETTLE_STEPS):
        p.stepSimulation(physicsClientId=cid)
        if bodies is not None and step + 1 >= _SETTLE_MIN_STEPS and all(
                _at_rest(p.getBaseVelocity(b, physicsClientId=cid)) for b in bodies):
            return step + 1
    return _SETTLE_STEPS


def _at_rest(velocity):
    """Whether a ((3,) linear m/s, (3,) angular rad/s) body velocity is below the rest limits."""
    linear, angular = velocity
    return max(map(abs, linear)) < _REST_SPEED and max(map(abs, angular)) < _REST_SPIN


def _rotate(cid, verts, quat):
    """(V, 3) body-frame vertices rotated by quat (x, y, z, w): -> (V, 3), base at the origin."""
    rot = np.array(p.getMatrixFromQuaternion(list(quat), physicsClientId=cid)).reshape(3, 3)
    return verts @ rot.T


def _frame(cid, body, local, yaw, pitch, fill):
    """Camera (target, eye, distance) at yaw/pitch whose frame the body's mesh spans by `fill`."""
    pos, orn = p.getBasePositionAndOrientation(body, physicsClientId=cid)
    verts = _rotate(cid, local, orn) + pos                                       # (V, 3) world
    target = 0.5 * (verts.min(0) + verts.max(0))
    back = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw),
                     math.sin(pitch)])                                           # target -> eye
    right = np.cross(-back, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, -back)
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


def _block_mean(rgb, factor):
    """Area-downsample: uint8 (S, S, 3) -> uint8 (S/f, S/f, 3), exact integer rounding."""
    s = rgb.shape[0] // factor
    blocks = rgb.reshape(s, factor, s, factor, 3).astype(np.uint32).sum(axis=(1, 3))
    n = factor * factor
    return ((blocks + n // 2) // n).astype(np.uint8)


def plan_test_set(num_examples, seed, object_ids=TEST_OBJECT_IDS):
    """Which (object, view) fills each slot: -> ids int32 (N, 11), views int64 (N, 11)."""
    num_examples = _check_count("num_examples", num_examples, 1)
    seed = _check_count("seed", seed, 0)
    try:
        ids = sorted({_check_object_id(i) for i in object_ids} - broken_object_ids())
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
