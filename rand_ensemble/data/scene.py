"""Pybullet scene contents: random draws, bodies placed on a checker floor, physics settling.

One scene per (seed, object_id, view): `sample_scene` draws the camera angles, the fill and the
distractors; placement draws each body's orientation and spot from the same stream. Bodies come
from `load_urdf` (the legacy path, per render) or from `make_shapes`, which builds, once per
object and client, the collision and visual shapes that loadURDF would (the fast path).
"""
import colorsys
import functools
import math
import os

import numpy as np

from rand_ensemble.data.bullet import p, pybullet_data
from rand_ensemble.errors import RandEnsembleError

NUM_OBJECTS = 1000                      # ids 0..999 have URDFs
TEST_OBJECT_IDS = range(900, 1000)      # default id range for test sets
POOL_OBJECT_IDS = range(0, 900)         # training pools, disjoint from the test objects

_DATA = pybullet_data.getDataPath()
_PLANE = os.path.join(_DATA, "plane100.urdf")
URDFS = [os.path.join(_DATA, "random_urdfs", f"{i:03d}", f"{i:03d}.urdf")
         for i in range(NUM_OBJECTS)]

_FILL = (0.45, 0.7)                     # target's widest extent / frame width
_PITCH = (20.0, 50.0)                   # degrees above the horizon
_NUM_DISTRACTORS = (2, 4)
_BEHIND_ARC = 0.9                       # radians either side of straight behind the target
_FLOOR_SCALE = 0.1                      # 0.1 m checks: the size of the objects
_RING = (0.1, 0.22)                     # distractor distance from the target, metres
_TIME_STEP = 1.0 / 60.0                 # coarse but stable for 0.1 m objects dropped 2 mm
# 0.4 s: long enough to tip over, short enough to be fast. Bodies still tumble at the end
# (0.03-0.4 m/s, 1-12 rad/s measured), so stopping once they rest would change the scenes.
_SETTLE_STEPS = 24


def check_object_id(object_id):
    """Return object_id as an int, or raise if random_urdfs has no URDF for it."""
    if isinstance(object_id, bool) or not isinstance(object_id, (int, np.integer)) \
            or not 0 <= object_id < NUM_OBJECTS:
        raise RandEnsembleError(
            f"no URDF for object id {object_id}: random_urdfs has ids 0..{NUM_OBJECTS - 1}")
    return int(object_id)


def check_count(name, value, minimum):
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
    for oid, urdf in enumerate(URDFS):
        with open(urdf[:-len(".urdf")] + ".obj") as f:
            if any(line.startswith("v ") and "nan" in line.lower() for line in f):
                broken.add(oid)
    return frozenset(broken)


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


def reset_world(cid):
    """A fresh world: gravity, time step and the floor; nothing else survives the reset."""
    p.resetSimulation(physicsClientId=cid)
    p.setGravity(0, 0, -9.81, physicsClientId=cid)
    p.setTimeStep(_TIME_STEP, physicsClientId=cid)
    p.loadURDF(_PLANE, useFixedBase=True, globalScaling=_FLOOR_SCALE, physicsClientId=cid)


def load_urdf(cid, oid):
    """loadURDF for object oid -> (body id, (V, 3) collision vertices in the body frame)."""
    try:
        body = p.loadURDF(URDFS[oid], physicsClientId=cid)
    except p.error as e:
        raise RandEnsembleError(
            f"cannot load URDF for object id {oid}: {URDFS[oid]} ({e})") from None
    return body, np.array(p.getMeshData(body, physicsClientId=cid)[1])


def make_shapes(cid, oid):
    """Object oid's shapes, as loadURDF builds them: -> (collision, visual, dynamics, verts)."""
    body, verts = load_urdf(cid, oid)
    try:                                # a body left behind would appear in every later scene
        info = p.getDynamicsInfo(body, -1, physicsClientId=cid)
        _, _, kind, scale, path, _, _, rgba = p.getVisualShapeData(body, physicsClientId=cid)[0]
    finally:
        p.removeBody(body, physicsClientId=cid)
    try:
        collision = p.createCollisionShape(kind, fileName=path.decode(), meshScale=scale,
                                           physicsClientId=cid)
        visual = p.createVisualShape(kind, fileName=path.decode(), meshScale=scale,
                                     rgbaColor=rgba, physicsClientId=cid)
    except p.error as e:
        raise RandEnsembleError(f"cannot make shapes for object id {oid}: {path} ({e})") from None
    dynamics = {"mass": info[0], "lateralFriction": info[1], "localInertiaDiagonal": info[2],
                "restitution": info[5], "rollingFriction": info[6], "spinningFriction": info[7],
                "collisionMargin": info[11]}
    return collision, visual, dynamics, verts


def drop(cid, body, scene, placed, rgba):
    """Orient (body id, local vertices) at random and set it on the floor at a free spot."""
    body, local = body
    rng = scene["rng"]
    quat = rng.normal(size=4)
    quat /= np.linalg.norm(quat)
    verts = rotate(cid, local, quat)                                 # (V, 3), body at the origin
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


def settle(cid):
    """Step the physics a fixed time so dropped bodies come to rest (or nearly)."""
    for _ in range(_SETTLE_STEPS):
        p.stepSimulation(physicsClientId=cid)


def rotate(cid, verts, quat):
    """(V, 3) body-frame vertices rotated by quat (x, y, z, w): -> (V, 3), base at the origin."""
    rot = np.array(p.getMatrixFromQuaternion(list(quat), physicsClientId=cid)).reshape(3, 3)
    return verts @ rot.T
