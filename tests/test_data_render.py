"""Tests for rand_ensemble.data.render and .scene: determinism in any order or process, colours,
framing, the scene-building steps, and the fast path against the legacy one."""
import colorsys
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

render = pytest.importorskip("rand_ensemble.data.render")
scene = pytest.importorskip("rand_ensemble.data.scene")
import pybullet as p  # noqa: E402

from rand_ensemble.errors import RandEnsembleError  # noqa: E402

HW = 16                                    # small renders keep the file fast; framing tests use 32
KEYS = [(0, 1, 7), (950, 3, 7), (450, 0, 2)]   # (object_id, view, seed)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def renderer():
    with render.Renderer(hw=HW) as r:
        yield r


def urdf_rgba(object_id):
    """The colour written in the object's URDF, read independently of pybullet."""
    text = open(scene.URDFS[object_id]).read()
    return [float(x) for x in re.search(r'<color rgba="([^"]+)"', text).group(1).split()]


def chroma(pixels):
    """Mean colour of (P, 3) pixels with brightness divided out: lighting differs between views."""
    mean = pixels.astype(float).mean(0)
    return mean / mean.sum()


def test_render_view_shape_dtype_and_json_camera(renderer):
    for object_id, view, seed in KEYS:
        image, camera = renderer.render_view(object_id, view, seed)
        assert image.shape == (HW, HW, 3) and image.dtype == np.uint8
        assert json.loads(json.dumps(camera)) == camera          # plain, JSON-serialisable values
        assert (camera["object_id"], camera["view"], camera["seed"]) == (object_id, view, seed)
        partition = render.TEST_OBJECT_IDS if object_id >= 900 else render.POOL_OBJECT_IDS
        distractors = camera["distractor_ids"]
        assert 2 <= len(distractors) <= 4 and len(set(distractors)) == len(distractors)
        assert all(d in partition and d != object_id for d in distractors)
        assert image.std() > 10                                   # a scene, not a blank frame


def test_same_key_identical_across_instances_and_orders(renderer):
    a, b, c = KEYS
    first = [renderer.render_view(*k)[0] for k in (a, b)]
    with render.Renderer(hw=HW) as other:
        other.render_view(*c)                                     # unrelated state first
        other._render(*a, target_rgba=(1, 0, 1, 1))               # a repaint must not stick
        second = [other.render_view(*k)[0] for k in (b, a)][::-1]
    again = renderer.render_view(*a)[0]                           # after b and c in this client
    for x, y in zip(first, second):
        assert x.tobytes() == y.tobytes()
    assert again.tobytes() == first[0].tobytes()


@pytest.mark.slow
def test_same_key_identical_in_fresh_process(renderer, tmp_path):
    out = tmp_path / "images.npy"
    code = ("import sys, numpy as np; from rand_ensemble.data.render import Renderer\n"
            f"r = Renderer(hw={HW})\n"
            f"np.save(sys.argv[1], np.stack([r.render_view(*k)[0] for k in {KEYS[::-1]!r}][::-1]))")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, cwd=ROOT)
    here = np.stack([renderer.render_view(*k)[0] for k in KEYS])
    assert np.load(out).tobytes() == here.tobytes()


def test_views_and_seeds_differ(renderer):
    base, _ = renderer.render_view(900, 0, 0)
    other_view, _ = renderer.render_view(900, 1, 0)
    other_seed, _ = renderer.render_view(900, 0, 1)
    assert np.abs(base.astype(int) - other_view).mean() > 5
    assert np.abs(base.astype(int) - other_seed).mean() > 5


def test_colour_modes():
    # oversample=1 so the target mask lines up with the output pixels.
    with render.Renderer(hw=32, colour="object", oversample=1) as obj, \
            render.Renderer(hw=32, colour="random", oversample=1) as rnd:
        means = {}
        for view in (0, 1):
            im_o, cam_o, mask_o = obj._render(900, view, 3)
            im_r, cam_r, mask_r = rnd._render(900, view, 3)
            # Colour draws have their own stream: both modes build the same geometry.
            assert np.array_equal(mask_o, mask_r) and mask_o.mean() > 0.02
            assert cam_o["target_rgba"] == pytest.approx(urdf_rgba(900))
            for d, rgba in zip(cam_o["distractor_ids"], cam_o["distractor_rgba"]):
                assert rgba == pytest.approx(urdf_rgba(d))
            assert cam_r["target_rgba"] != pytest.approx(urdf_rgba(900), abs=1e-3)
            means[view] = chroma(im_o[mask_o]), chroma(im_r[mask_r]), cam_r["target_rgba"]
        # object mode: the same URDF colour in both views; random mode: a new colour per view.
        assert np.abs(means[0][0] - means[1][0]).max() < 0.03, means
        assert np.abs(means[0][1] - means[1][1]).max() > 0.06, means
        assert means[0][2] != pytest.approx(means[1][2], abs=1e-3)


def test_target_fills_part_of_the_frame():
    # Paint the target two ways: the pixels that change are exactly the visible target.
    fractions = []
    with render.Renderer(hw=32) as r:
        for i, object_id in enumerate([0, 150, 300, 450, 600, 750, 899, 900, 950, 999]):
            magenta, _, _ = r._render(object_id, i, 0, target_rgba=(1, 0, 1, 1))
            green, _, _ = r._render(object_id, i, 0, target_rgba=(0, 1, 0, 1))
            fractions.append((magenta != green).any(-1).mean())
    # Thin sticks cover little area even when they span the frame, hence the lower floor.
    assert min(fractions) >= 0.03, fractions
    assert np.median(fractions) >= 0.08, fractions


@pytest.mark.slow
def test_render_test_set_structure_and_determinism():
    images, ids = render.render_test_set(3, seed=11, hw=HW, object_ids=range(40, 60), progress=True)
    assert images.shape == (3, 11, HW, HW, 3) and images.dtype == np.uint8
    assert ids.shape == (3, 11) and ids.dtype == np.int32
    assert np.array_equal(ids[:, 0], ids[:, 1])
    for row, example in zip(ids, images):
        assert len(set(row[1:].tolist())) == 10                  # anchor + nine distinct others
        assert np.abs(example[0].astype(int) - example[1]).mean() > 5   # two different views
    assert ids.min() >= 40 and ids.max() < 60
    plan, views = render.plan_test_set(3, 11, range(40, 60))
    assert np.array_equal(plan, ids) and len(np.unique(views)) == views.size
    with render.Renderer(hw=HW) as r:                             # any slot re-renders exactly
        again, _ = r.render_view(int(ids[2, 7]), int(views[2, 7]), 11)
    assert again.tobytes() == images[2, 7].tobytes()


def test_plan_is_deterministic_and_prefix_stable():
    ids5, views5 = render.plan_test_set(5, seed=4)
    ids3, views3 = render.plan_test_set(3, seed=4)
    assert np.array_equal(ids5[:3], ids3) and np.array_equal(views5[:3], views3)
    assert np.array_equal(ids5, render.plan_test_set(5, seed=4)[0])
    assert not np.array_equal(ids5, render.plan_test_set(5, seed=5)[0])
    assert ids5.min() >= 900 and ids5.max() < 1000                 # TEST_OBJECT_IDS by default


@pytest.mark.parametrize("object_id", [-1, 1000, 1003])
def test_missing_urdf_raises(renderer, object_id):
    with pytest.raises(RandEnsembleError) as err:
        renderer.render_view(object_id, 0, 0)
    message = str(err.value)
    assert f"object id {object_id}" in message and "\n" not in message
    if object_id == 1003:
        assert message == "no URDF for object id 1003: random_urdfs has ids 0..999"


@pytest.mark.parametrize("call, needle", [
    (lambda: render.Renderer(colour="rainbow"), "colour"),
    (lambda: render.Renderer(hw=4), "hw"),
    (lambda: render.Renderer(hw=32.0), "hw"),
    (lambda: render.render_test_set(0, seed=0), "num_examples"),
    (lambda: render.render_test_set(1, seed=0, object_ids=range(5)), "at least 10"),
    (lambda: render.render_test_set(1, seed=0, object_ids=range(995, 1005)), "1000"),
    (lambda: render.render_test_set(1, seed=0, hw=7), "hw"),
    (lambda: render.render_test_set(1, seed=-1), "seed"),
])
def test_bad_arguments_raise_one_line_errors(call, needle):
    with pytest.raises(RandEnsembleError) as err:
        call()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_core_import_does_not_import_pybullet():
    code = "import sys, rand_ensemble; assert 'pybullet' not in sys.modules, 'pybullet imported'"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


def test_broken_mesh_is_refused_not_rendered():
    # random_urdfs/168/168.obj holds only NaN vertices; TinyRenderer can hang on it.
    with open(scene.URDFS[168][:-5] + ".obj") as f:
        assert any(line.startswith("v ") and "nan" in line for line in f)
    assert 168 in render.broken_object_ids()
    with render.Renderer(hw=16) as r:
        with pytest.raises(RandEnsembleError, match="168 has a broken mesh"):
            r.render_view(168, 2, 0)
    ids, _ = render.plan_test_set(30, 0, object_ids=range(160, 175))
    assert 168 not in ids


def test_fast_render_independent_of_history_and_failures(monkeypatch):
    # The fast path keeps shapes and the floor between renders: what came before (other scenes,
    # cold or cached shapes, a repaint, a render that failed half-built) must not show.
    key = (250, 1, 1)
    with render.Renderer(hw=HW) as alone:
        expected = alone.render_view(*key)[0]
    with render.Renderer(hw=HW) as busy:
        for other in [(720, 3, 1), (5, 0, 1), (910, 4, 1)]:
            busy.render_view(*other)
        busy._render(480, 2, 1, target_rgba=(0, 1, 0, 1))
        calls = []

        def drop_then_fail(*args):
            calls.append(args)
            if len(calls) == 2:
                raise RuntimeError("injected")
            return scene.drop(*args)

        monkeypatch.setattr(render, "drop", drop_then_fail)
        with pytest.raises(RuntimeError, match="injected"):
            busy.render_view(990, 5, 1)
        monkeypatch.undo()
        assert p.getNumBodies(physicsClientId=busy.client) == 1     # the floor alone again
        after = [busy.render_view(*key)[0] for _ in range(2)]
    for image in after:
        assert image.tobytes() == expected.tobytes()


def test_sample_scene_draws():
    for object_id, view, seed in KEYS + [(900, 0, 0), (17, 9, 3)]:
        s = scene.sample_scene(object_id, view, seed)
        assert 0 <= s["yaw"] < 2 * math.pi and 20 <= math.degrees(s["pitch"]) <= 50
        assert 0.45 <= s["fill"] <= 0.7
        ids = s["object_ids"]
        assert ids[0] == object_id and 3 <= len(ids) <= 5 and len(set(ids)) == len(ids)
        test_side = object_id >= 900
        assert all((d >= 900) == test_side and d not in scene.broken_object_ids() for d in ids[1:])
        for rgb in s["colours"]:                                   # saturated, not dark
            _, sat, val = colorsys.rgb_to_hsv(*rgb)
            assert sat >= 0.5 - 1e-9 and val >= 0.4 - 1e-9
        again = scene.sample_scene(object_id, view, seed)
        assert {k: v for k, v in again.items() if k != "rng"} == \
            {k: v for k, v in s.items() if k != "rng"}
        yaws = {scene.sample_scene(*k)["yaw"] for k in
                [(object_id, view, seed), (object_id, view + 1, seed), (object_id, view, seed + 1)]}
        assert len(yaws) == 3                                      # keyed by (seed, object, view)


def test_spot_behind_the_target_and_clear():
    placed = [(0.0, 0.0, 0.05)]
    for seed in range(50):
        yaw = seed * 0.37
        x, y = scene._spot(np.random.default_rng(seed), yaw, 0.03, placed)
        dist = math.hypot(x, y)
        assert 0.1 <= dist <= 0.22 and dist > 0.08                # in the ring, footprints apart
        behind = math.atan2(y, x) - (yaw + math.pi)               # angle from straight behind
        assert abs(math.atan2(math.sin(behind), math.cos(behind))) <= 0.9 + 1e-9


def quat_matrix(q):
    """Rotation matrix of a unit quaternion (x, y, z, w), written out by hand."""
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@pytest.mark.parametrize("fast", [True, False])
def test_placement_rests_the_target_2mm_above_the_floor_at_the_origin(fast):
    with render.Renderer(hw=HW, fast=fast) as r:
        s = scene.sample_scene(450, 0, 2)
        bodies = []
        try:
            r._place(s, None, bodies)
            body, local = bodies[0]
            pos, orn = p.getBasePositionAndOrientation(body, physicsClientId=r.client)
            world = local @ quat_matrix(orn).T + pos                  # (V, 3), before settling
            assert world[:, 2].min() == pytest.approx(0.002, abs=1e-9)
            centre = 0.5 * (world.min(0) + world.max(0))
            assert centre[:2] == pytest.approx([0.0, 0.0], abs=1e-9)
            assert len(bodies) == len(s["object_ids"])
        finally:
            for b, _ in bodies:
                p.removeBody(b, physicsClientId=r.client)


def test_block_mean_rounds_like_a_loop():
    rgb = np.random.default_rng(0).integers(0, 256, (12, 12, 3)).astype(np.uint8)
    out = render._block_mean(rgb, 3)
    for i in range(4):
        for j in range(4):
            for c in range(3):
                block = [int(v) for v in rgb[3 * i:3 * i + 3, 3 * j:3 * j + 3, c].ravel()]
                assert out[i, j, c] == math.floor(sum(block) / 9 + 0.5)
    assert render._block_mean(np.array([[[0] * 3, [1] * 3], [[2] * 3, [3] * 3]], np.uint8),
                              2).tolist() == [[[2, 2, 2]]]             # 1.5 rounds up


def test_record_matches_the_scene_and_the_mode():
    with render.Renderer(hw=HW, colour="random") as r:
        _, camera = r.render_view(17, 9, 3)
    s = scene.sample_scene(17, 9, 3)
    assert camera["yaw"] == pytest.approx(math.degrees(s["yaw"]))
    assert camera["pitch"] == pytest.approx(math.degrees(s["pitch"]))
    assert camera["distractor_ids"] == s["object_ids"][1:]
    assert camera["target_rgba"] == pytest.approx(list(s["colours"][0]) + [1.0], abs=1e-6)
    assert (camera["fast"], camera["oversample"]) == (True, render.FAST_OVERSAMPLE)
    eye, target = np.array(camera["eye"]), np.array(camera["target"])
    assert np.linalg.norm(eye - target) == pytest.approx(camera["distance"])


# Fast vs legacy on fixed keys, the legacy path as the independent computation. Tolerances
# (0-255 scale, measured in brackets): with the same 4x oversampling only physics differs, as
# the fast path sorts contact pairs (mean |diff| 0.0-0.9, target moves < 1 mm); the default 2x
# oversampling adds aliasing at edges and floor lines (mean |diff| 2.6-4.1 per image).
AGREE_KEYS = [(5, 0, 1), (250, 1, 1), (480, 2, 1), (720, 3, 1), (910, 4, 1), (990, 5, 1)]


@pytest.mark.slow
def test_fast_path_agrees_with_legacy():
    diffs_os4, diffs_default = [], []
    with render.Renderer(fast=False) as legacy, render.Renderer(oversample=4) as fast4, \
            render.Renderer() as fast:
        for key in AGREE_KEYS:
            old, cam_old, mask_old = legacy._render(*key)
            new4, cam_new, mask_new = fast4._render(*key)
            new = fast.render_view(*key)[0]
            for name in ("distractor_ids", "yaw", "pitch", "target_rgba", "distractor_rgba"):
                assert cam_new[name] == cam_old[name], name               # the same scene
            assert np.abs(np.subtract(cam_new["target"], cam_old["target"])).max() < 2e-3
            assert (mask_new & mask_old).sum() / (mask_new | mask_old).sum() > 0.95
            diffs_os4.append(np.abs(new4.astype(int) - old).mean())
            diffs_default.append(np.abs(new.astype(int) - old).mean())
    assert max(diffs_os4) < 2.0 and np.mean(diffs_os4) < 1.0, diffs_os4
    assert max(diffs_default) < 6.0 and np.mean(diffs_default) < 5.0, diffs_default
    assert min(diffs_default) > 0.5, diffs_default            # the comparison can see a change


def test_cross_is_numpy_cross_bit_for_bit():
    rng = np.random.default_rng(1)
    for a, b in rng.normal(size=(20, 2, 3)):
        assert render._cross(a, b).tobytes() == np.cross(a, b).tobytes()


def test_shape_failure_is_a_one_line_error_and_leaves_the_floor(monkeypatch):
    def fail(*args, **kwargs):
        raise p.error("injected")

    with render.Renderer(hw=HW) as r:
        monkeypatch.setattr(p, "createCollisionShape", fail)
        with pytest.raises(RandEnsembleError, match="cannot make shapes for object id 5") as err:
            r.render_view(5, 0, 1)
        assert "\n" not in str(err.value)
        monkeypatch.undo()
        assert p.getNumBodies(physicsClientId=r.client) == 1    # the floor alone
        image = r.render_view(5, 0, 1)[0]
    with render.Renderer(hw=HW) as fresh:
        assert image.tobytes() == fresh.render_view(5, 0, 1)[0].tobytes()
