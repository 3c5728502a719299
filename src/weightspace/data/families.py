"""Procedural shape families: analytic SDFs with sampled parameters and a declared topology (b0, b1, b2).

Every family keeps its shapes inside [-0.9, 0.9]^3 and every thin part at least 0.14 world
units thick (two voxels of a 32^3 grid over [-1, 1]^3, voxel = 2/31), so the declared
topology survives sampling at R >= 32. `weightspace.data.make` measures every sample and
redraws the rare one whose grid topology differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

import numpy as np

from weightspace.data import sdf_primitives as sp

Params = dict
TAU = 2.0 * np.pi
Pose = Literal["random", "aligned", "canonical"]
POSES = ("random", "aligned", "canonical")
# the pose of imported meshes: `data import` centres and scales a mesh but never turns it, so its shapes are in
# whatever orientation their files gave them, not in any of POSES' procedural distributions
AS_GIVEN = "as given"
ALIGNED_JITTER = np.deg2rad(15.0)  # aligned pose: each Euler angle uniform in +-15 degrees of the canonical frame


def row_pose(row: Mapping[str, Any]) -> str:
    """The pose of a data manifest row: its own `pose`, else (a folder written before rows recorded one) AS_GIVEN
    for an imported shape and `random`, the only pose `data make` had then, for a procedural one."""
    if "pose" in row:
        return str(row["pose"])
    return AS_GIVEN if row.get("family") == "imported" else "random"


@dataclass(frozen=True)
class Family:
    """A family of shapes: `sample_params(rng) -> dict`, `sdf(points (N, 3), params) -> (N,)` world units."""

    name: str
    betti: tuple[int, int, int]
    description: str
    sample_params: Callable[[np.random.Generator], Params]
    sdf_local: Callable[[np.ndarray, Params], np.ndarray]

    def draw(self, rng: np.random.Generator, pose: str = "random") -> Params:
        """Parameters of one shape. `random` is the family's own pose distribution (uniform rotations
        for rings, dumbbells, shells and parts; a uniform yaw for furniture, mugs and ladders);
        `aligned` keeps every other parameter of the same draw and puts the shape in its canonical
        frame with a small jitter, as aligned shape collections (ShapeNet-style) have; `canonical` is
        `aligned` with a scatter's layout in one frame as well (`canonical_layout`)."""
        if pose not in POSES:
            raise ValueError(f"pose must be one of {POSES}, got {pose!r}")
        params = self.sample_params(rng)
        if pose == "random":
            return params
        params = align(params, rng)
        return canonical_layout(params, rng) if pose == "canonical" else params

    def sdf(self, points: np.ndarray, params: Params) -> np.ndarray:
        """Signed distance at `points` (N, 3) float: (N,) float64, negative inside."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        local = sp.to_local(p, quaternion_matrix(params["rotation"]), params.get("center", (0.0, 0.0, 0.0)))
        return self.sdf_local(local, params)


# ---------------------------------------------------------------- rotations (stored as unit quaternions w, x, y, z)


def quaternion_matrix(q) -> np.ndarray:
    """Unit quaternion (w, x, y, z) to a rotation matrix (3, 3) float64."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _random_rotation(rng: np.random.Generator) -> list[float]:
    """Uniform rotation: a normalised 4D Gaussian is uniform on the unit quaternions."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return [float(v) for v in q]


def _yaw_tilt(rng: np.random.Generator, tilt: float = 0.0) -> list[float]:
    """Rotation about z by a uniform yaw, then tilted by at most `tilt` radians about x and y."""
    yaw, pitch, roll = rng.uniform(0, TAU), rng.uniform(-tilt, tilt), rng.uniform(-tilt, tilt)
    m = sp.rotation_matrix(yaw, pitch, roll)
    # matrix to quaternion (the trace is > -1 for these small tilts, so w > 0 is well conditioned)
    w = np.sqrt(max(1.0 + np.trace(m), 1e-12)) / 2.0
    if w < 1e-3:  # a half-turn yaw with no tilt: fall back to the closed form of a z rotation
        return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]
    x = (m[2, 1] - m[1, 2]) / (4 * w)
    y = (m[0, 2] - m[2, 0]) / (4 * w)
    z = (m[1, 0] - m[0, 1]) / (4 * w)
    return [float(w), float(x), float(y), float(z)]


def _jitter(rng: np.random.Generator) -> list[float]:
    """A quaternion (w, x, y, z) near the identity: Euler angles each uniform in +-ALIGNED_JITTER."""
    m = sp.rotation_matrix(*rng.uniform(-ALIGNED_JITTER, ALIGNED_JITTER, size=3))
    return _matrix_quaternion(m)


def _matrix_quaternion(m: np.ndarray) -> list[float]:
    """Rotation matrix (3, 3) to a unit quaternion (w, x, y, z), for rotations with trace > -1."""
    w = np.sqrt(max(1.0 + np.trace(m), 1e-12)) / 2.0
    x = (m[2, 1] - m[1, 2]) / (4 * w)
    y = (m[0, 2] - m[2, 0]) / (4 * w)
    z = (m[1, 0] - m[0, 1]) / (4 * w)
    return [float(w), float(x), float(y), float(z)]


def align(params: Params, rng: np.random.Generator) -> Params:
    """The same shape in its canonical frame with a small jittered rotation (the `aligned` pose).

    Single bodies get a jittered identity rotation. Parts (pair, scatter) keep their layout
    relative to each other: a pair is turned so the line through its parts runs along x, and
    every part's own rotation becomes a jittered identity.
    """
    out = dict(params)
    if "parts" not in out:
        out["rotation"] = _jitter(rng)
        return out
    parts = [dict(p) for p in out["parts"]]
    for p in parts:
        p["rotation"] = _jitter(rng)
    if len(parts) == 2:  # the pair's axis to +x: world = J R_axis local, with R_axis a -> x
        a = np.asarray(parts[1]["center"], dtype=np.float64) - np.asarray(parts[0]["center"], dtype=np.float64)
        a /= np.linalg.norm(a)
        v, c = np.cross(a, [1.0, 0.0, 0.0]), float(a[0])
        if c < -1 + 1e-9:  # a = -x: a half turn about z
            r_axis = np.diag([-1.0, -1.0, 1.0])
        else:
            vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
            r_axis = np.eye(3) + vx + vx @ vx / (1 + c)  # Rodrigues: the rotation taking a to x
        for p in parts:  # bake the turn into the centres so the parts' own frames stay near canonical
            p["center"] = [float(x) for x in r_axis @ np.asarray(p["center"], dtype=np.float64)]
        out["rotation"] = _jitter(rng)
    out["parts"] = parts
    return out


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


# ---------------------------------------------------------------- table: top + four legs, one solid (1, 0, 0)


def _table_params(rng):
    hx, hy = _u(rng, 0.4, 0.62), _u(rng, 0.3, 0.58)
    top_half = _u(rng, 0.07, 0.12)
    leg = _u(rng, 0.07, 0.1)  # half width of a square leg
    return dict(
        rotation=_yaw_tilt(rng),
        top=[hx, hy, top_half],
        top_z=_u(rng, 0.1, 0.4),
        top_round=_u(rng, 0.0, top_half * 0.9),
        leg=leg,
        inset=_u(rng, 0.0, 0.1),
        floor=_u(rng, -0.85, -0.55),
    )


def _table_sdf(p, k):
    hx, hy, ht = k["top"]
    d = sp.rounded_box(p, (0, 0, k["top_z"]), (hx, hy, ht), k["top_round"])
    lx, ly = hx - k["leg"] - k["inset"], hy - k["leg"] - k["inset"]
    zc = 0.5 * (k["floor"] + k["top_z"])
    hz = 0.5 * (k["top_z"] - k["floor"])
    for sx in (-1, 1):
        for sy in (-1, 1):
            d = np.minimum(d, sp.box(p, (sx * lx, sy * ly, zc), (k["leg"], k["leg"], hz)))
    return d


# ---------------------------------------------------------------- chair: seat, back and thin legs (1, 0, 0)


def _chair_params(rng):
    seat_half = _u(rng, 0.07, 0.09)
    return dict(
        rotation=_yaw_tilt(rng),
        seat=[_u(rng, 0.3, 0.45), _u(rng, 0.3, 0.45), seat_half],
        seat_z=_u(rng, -0.2, 0.05),
        leg=_u(rng, 0.07, 0.085),  # thin: 0.14 to 0.17 thick, just over two voxels at 32^3
        inset=_u(rng, 0.0, 0.06),
        back_half=_u(rng, 0.07, 0.1),
        back_top=_u(rng, 0.5, 0.85),
        floor=-0.85,
    )


def _chair_sdf(p, k):
    sx, sy, st = k["seat"]
    d = sp.box(p, (0, 0, k["seat_z"]), (sx, sy, st))
    lx, ly = sx - k["leg"] - k["inset"], sy - k["leg"] - k["inset"]
    zc, hz = 0.5 * (k["floor"] + k["seat_z"]), 0.5 * (k["seat_z"] - k["floor"])
    for ax in (-1, 1):
        for ay in (-1, 1):
            d = np.minimum(d, sp.box(p, (ax * lx, ay * ly, zc), (k["leg"], k["leg"], hz)))
    bz0, bz1 = k["seat_z"], k["back_top"]
    back = sp.box(p, (0, -(sy - k["back_half"]), 0.5 * (bz0 + bz1)), (sx, k["back_half"], 0.5 * (bz1 - bz0)))
    return np.minimum(d, back)


# ---------------------------------------------------------------- dumbbell: two weights on a thin bar (1, 0, 0)


def _dumbbell_params(rng):
    r1, r2 = _u(rng, 0.2, 0.33), _u(rng, 0.2, 0.33)
    half = _u(rng, 0.45, 0.88 - max(r1, r2))
    return dict(
        rotation=_random_rotation(rng),
        radii=[r1, r2],
        half_length=half,
        bar=_u(rng, 0.07, 0.09),  # thin bar: 0.14 to 0.18 thick
        blend=_u(rng, 0.0, 0.04),
    )


def _dumbbell_sdf(p, k):
    L = k["half_length"]
    r1, r2 = k["radii"]
    ends = np.minimum(sp.sphere(p, (-L, 0, 0), r1), sp.sphere(p, (L, 0, 0), r2))
    bar = sp.capsule(p, (-L, 0, 0), (L, 0, 0), k["bar"])
    return sp.smooth_union(ends, bar, k["blend"])


# ---------------------------------------------------------------- torus: one ring, genus 1 (1, 1, 0)


def _torus_params(rng):
    minor = _u(rng, 0.08, 0.22)
    major = _u(rng, minor + 0.18, 0.86 - minor)
    return dict(rotation=_random_rotation(rng), major=major, minor=minor)


def _torus_sdf(p, k):
    return sp.torus(p, (0, 0, 0), k["major"], k["minor"], "z")


# ---------------------------------------------------------------- mug: open cup with a handle, genus 1 (1, 1, 0)


def _mug_params(rng):
    radius, half_height = _u(rng, 0.3, 0.45), _u(rng, 0.35, 0.6)
    tube = _u(rng, 0.07, 0.08)
    handle = _u(rng, 0.22, min(0.32, half_height - tube - 0.05))
    return dict(
        rotation=_yaw_tilt(rng),
        radius=radius,
        half_height=half_height,
        wall=_u(rng, 0.14, 0.18),
        bottom=_u(rng, 0.14, 0.18),
        handle=handle,
        handle_tube=tube,
        handle_offset=_u(rng, 0.03, 0.08),
        handle_z=_u(rng, -1, 1) * (half_height - handle - tube - 0.04),
    )


def _mug_sdf(p, k):
    R, H, e = k["radius"], k["half_height"], k["handle_offset"]
    width = 2 * R + e + k["handle"] + k["handle_tube"]
    cx = -0.5 * width + R  # centre the whole mug, handle included, on the origin
    cup = sp.cylinder(p, (cx, 0, 0), R, H, "z")
    handle = sp.torus(p, (cx + R + e, 0, k["handle_z"]), k["handle"], k["handle_tube"], "y")
    z0 = -H + k["bottom"]  # floor of the cavity; it is open through the top
    cavity = sp.cylinder(p, (cx, 0, 0.5 * (z0 + H + 0.5)), R - k["wall"], 0.5 * (H + 0.5 - z0), "z")
    return sp.difference(np.minimum(cup, handle), cavity)


# ---------------------------------------------------------------- pretzel: two fused rings in a figure eight, genus 2 (1, 2, 0)


def _pretzel_params(rng):
    minor = _u(rng, 0.07, 0.11)
    overlap = _u(rng, 0.2, 0.7)  # ring centres sit 2 (major + overlap * minor) apart: tubes fuse, holes stay apart
    major = _u(rng, minor + 0.15, (0.88 - (1 + overlap) * minor) / 2)
    return dict(rotation=_random_rotation(rng), major=major, minor=minor, overlap=overlap, blend=_u(rng, 0.0, 0.03))


def _pretzel_sdf(p, k):
    d = k["major"] + k["overlap"] * k["minor"]
    a = sp.torus(p, (-d, 0, 0), k["major"], k["minor"], "z")
    b = sp.torus(p, (d, 0, 0), k["major"], k["minor"], "z")
    return sp.smooth_union(a, b, k["blend"])


# ---------------------------------------------------------------- ladder: two rails and four rungs, genus 3 (1, 3, 0)


def _ladder_params(rng):
    half_length, rung = _u(rng, 0.6, 0.7), _u(rng, 0.07, 0.075)
    end = _u(rng, 0.0, 0.06)
    step = (2 * (half_length - end)) / 3
    rungs = [-half_length + end + i * step + _u(rng, -0.015, 0.015) for i in range(4)]
    return dict(
        rotation=_yaw_tilt(rng, tilt=0.2),
        half_length=half_length,
        half_width=_u(rng, 0.25, 0.45),
        rail=_u(rng, 0.07, 0.09),
        rung=rung,
        rungs=rungs,
    )


def _ladder_sdf(p, k):
    L, w = k["half_length"], k["half_width"]
    d = np.minimum(sp.capsule(p, (-w, 0, -L), (-w, 0, L), k["rail"]), sp.capsule(p, (w, 0, -L), (w, 0, L), k["rail"]))
    for z in k["rungs"]:
        d = np.minimum(d, sp.capsule(p, (-w, 0, z), (w, 0, z), k["rung"]))
    return d


# ---------------------------------------------------------------- shell: a closed hollow solid with one cavity (1, 0, 1)

SHELL_KINDS = ("rounded_box", "sphere", "capsule")


def _shell_params(rng):
    kind = SHELL_KINDS[int(rng.integers(len(SHELL_KINDS)))]
    thickness = _u(rng, 0.14, 0.22)
    reach = 0.86 - thickness / 2  # the outer surface sits thickness / 2 beyond the base surface
    if kind == "rounded_box":
        half = rng.uniform(0.35, 0.7, size=3)
        half *= min(1.0, reach / np.linalg.norm(half))
        size = [float(v) for v in half]
        extra = _u(rng, 0.05, 0.9 * min(size))
    elif kind == "sphere":
        size, extra = [_u(rng, 0.4, reach)], 0.0
    else:
        radius = _u(rng, 0.3, 0.45)
        size, extra = [radius], _u(rng, 0.1, reach - radius)  # extra = half length of the axis segment
    return dict(rotation=_random_rotation(rng), kind=kind, size=size, extra=extra, thickness=thickness)


def _shell_sdf(p, k):
    if k["kind"] == "rounded_box":
        base = sp.rounded_box(p, (0, 0, 0), k["size"], k["extra"])
    elif k["kind"] == "sphere":
        base = sp.sphere(p, (0, 0, 0), k["size"][0])
    else:
        base = sp.capsule(p, (0, 0, -k["extra"]), (0, 0, k["extra"]), k["size"][0])
    return sp.shell(base, k["thickness"])


def canonical_layout(params: Params, rng: np.random.Generator) -> Params:
    """An aligned shape of three or more parts with its layout turned into one frame (the `canonical` pose).

    The frame is the aligned pair's rule carried to more parts: +x points from the parts' centroid to
    the largest part (by reach), and the second largest lies in the half-plane y > 0. The turn is about
    the origin, so every part stays where the family's bounds put it; the whole shape then gets the
    aligned pose's jitter. Other shapes are returned unchanged, so a `canonical` data set differs from
    an `aligned` one of the same seed only in its scatters.
    """
    parts = params.get("parts")
    if not parts or len(parts) < 3:
        return params
    centres = np.array([p["center"] for p in parts], dtype=np.float64)  # (P, 3)
    order = np.argsort([-p["reach"] for p in parts], kind="stable")  # (P,) largest first
    g = centres.mean(axis=0)  # (3,)
    e1 = centres[order[0]] - g
    v = centres[order[1]] - g
    e2 = v - (v @ e1) / max(e1 @ e1, 1e-18) * e1
    if np.linalg.norm(e1) < 1e-9 or np.linalg.norm(e2) < 1e-9:  # degenerate layout: keep the aligned pose
        return params
    e1, e2 = e1 / np.linalg.norm(e1), e2 / np.linalg.norm(e2)
    turn = np.stack([e1, e2, np.cross(e1, e2)])  # (3, 3) rows: world -> canonical, a proper rotation
    out = dict(params)
    out["parts"] = [{**p, "center": [float(x) for x in turn @ np.asarray(p["center"], dtype=np.float64)]} for p in parts]
    out["rotation"] = _jitter(rng)
    return out


# ---------------------------------------------------------------- separate parts: a pair (2, 0, 0) and a scatter of three (3, 0, 0)

PART_KINDS = ("sphere", "rounded_box", "capsule")


def _part(rng, scale: float) -> dict:
    """One compact part in its own frame; `reach` bounds its distance from its centre."""
    kind = PART_KINDS[int(rng.integers(len(PART_KINDS)))]
    if kind == "sphere":
        size = [_u(rng, 0.6, 1.0) * scale]
        reach = size[0]
    elif kind == "rounded_box":
        size = [float(v) for v in rng.uniform(0.45, 0.75, size=3) * scale]
        reach = float(np.linalg.norm(size))
    else:
        radius, half = _u(rng, 0.35, 0.55) * scale, _u(rng, 0.2, 0.5) * scale
        size, reach = [radius, half], radius + half
    return dict(kind=kind, size=size, round=_u(rng, 0.02, 0.3) * min(size), rotation=_random_rotation(rng), reach=reach)


def _part_sdf(p, part: dict, center) -> np.ndarray:
    q = sp.to_local(p, quaternion_matrix(part["rotation"]), center)
    if part["kind"] == "sphere":
        return sp.sphere(q, (0, 0, 0), part["size"][0])
    if part["kind"] == "rounded_box":
        return sp.rounded_box(q, (0, 0, 0), part["size"], part["round"])
    radius, half = part["size"]
    return sp.capsule(q, (0, 0, -half), (0, 0, half), radius)


def _pair_params(rng):
    a, b = _part(rng, 0.28), _part(rng, 0.28)  # reach <= 0.37 each, so the pair spans at most 1.76
    gap = _u(rng, 0.16, 0.3)  # between bounding spheres, so the true gap is at least this
    span = 2 * a["reach"] + gap + 2 * b["reach"]
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a["center"] = [float(v) for v in (-span / 2 + a["reach"]) * axis]
    b["center"] = [float(v) for v in (span / 2 - b["reach"]) * axis]
    return dict(rotation=[1.0, 0.0, 0.0, 0.0], parts=[a, b], gap=gap)


def _scatter_params(rng):
    parts: list[dict] = []
    gap, tries = 0.16, 0
    while len(parts) < 3:  # rejection sampling of centres inside the ball that keeps each part in [-0.9, 0.9]^3
        tries += 1
        if tries % 200 == 0:  # a crowded start: begin again rather than search forever
            parts = []
        part = _part(rng, 0.25)
        direction = rng.normal(size=3)
        c = direction / np.linalg.norm(direction) * rng.uniform(0, 0.88 - part["reach"])
        if all(np.linalg.norm(c - np.asarray(o["center"])) >= part["reach"] + o["reach"] + gap for o in parts):
            part["center"] = [float(v) for v in c]
            parts.append(part)
    return dict(rotation=[1.0, 0.0, 0.0, 0.0], parts=parts, gap=gap)


def _parts_sdf(p, k):
    return sp.union(*[_part_sdf(p, part, part["center"]) for part in k["parts"]])


# ---------------------------------------------------------------- registry (order = integer label; append only)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("table", (1, 0, 0), "tabletop on four square legs; one solid", _table_params, _table_sdf),
        Family("chair", (1, 0, 0), "seat, backrest and four thin legs (0.14-0.17 thick); one solid", _chair_params, _chair_sdf),
        Family("dumbbell", (1, 0, 0), "two balls joined by a thin bar (0.14-0.18 thick)", _dumbbell_params, _dumbbell_sdf),
        Family("torus", (1, 1, 0), "a ring; genus 1", _torus_params, _torus_sdf),
        Family("mug", (1, 1, 0), "open cup with a ring handle; genus 1", _mug_params, _mug_sdf),
        Family("pretzel", (1, 2, 0), "two rings fused into a figure eight; genus 2", _pretzel_params, _pretzel_sdf),
        Family("ladder", (1, 3, 0), "two rails and four rungs; genus 3", _ladder_params, _ladder_sdf),
        Family("shell", (1, 0, 1), "closed hollow box, ball or capsule; one cavity", _shell_params, _shell_sdf),
        Family("pair", (2, 0, 0), "two separate compact parts", _pair_params, _parts_sdf),
        Family("scatter", (3, 0, 0), "three separate compact parts", _scatter_params, _parts_sdf),
    )
}
FAMILY_NAMES: list[str] = list(FAMILIES)


def get_family(name: str) -> Family:
    """The family called `name`; an unknown name raises InputError listing the valid ones."""
    from weightspace.runtime.errors import InputError

    if name not in FAMILIES:
        raise InputError(f"unknown family {name!r}; valid families: {', '.join(FAMILY_NAMES)}")
    return FAMILIES[name]
