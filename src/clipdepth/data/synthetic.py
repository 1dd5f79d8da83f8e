"""Procedural RGB-D scenes with exact metric depth: the package's built-in data.

Rooms ("indoor", NYU-like camera) and streets ("outdoor", KITTI-like camera) are made of
axis-aligned boxes and ray-cast per pixel, so depth is exact and no binary data is shipped.
Depth is planar (the camera z of the hit point), as in NYU and KITTI ground truth. Textures are
fixed in world units, so a far surface shows a finer image texture than a near one: appearance
carries depth cues beside the strong cue of image position under a known camera height.

Conventions: world x right, y up, z forward (the view at zero yaw and pitch); camera x right,
y down, z forward; pixel (row v, column u) has its centre at (u, v), as in OpenCV, so its ray is
((u - cx) / fx, (v - cy) / fy, 1) in camera coordinates and a floor pixel below the horizon of a
level camera at height h has depth h * fy / (v - cy).
"""

from __future__ import annotations

import colorsys
import dataclasses
import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from ..errors import ConfigError
from .sample import RGBDSample

__all__ = ["DEFAULT_SIZE", "DEPTH_RANGE", "SyntheticScenes", "render_scene"]

DEPTH_RANGE = {"indoor": 10.0, "outdoor": 80.0}
DEFAULT_SIZE = {"indoor": (240, 320), "outdoor": (192, 640)}  # (height, width)
SPLITS = ("train", "val", "test")

# (fx, fy, cx, cy, width, height) of the camera each kind imitates; scaled to the requested size.
_REFERENCE_CAMERA = {
    "indoor": (518.86, 519.47, 325.58, 253.74, 640, 480),  # NYU Depth v2
    "outdoor": (721.54, 721.54, 609.56, 172.85, 1242, 375),  # KITTI
}

Colour = tuple[float, float, float]
Vector = tuple[float, float, float]
Texture = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Albedo (N, 3) in [0, 1] at in-plane world coordinates (a, b) of a face, in metres.

On vertical faces b is the height y and a the horizontal axis; on horizontal faces (a, b) = (x, z).
"""
_FACE_PLANE_AXES = ((2, 1), (0, 2), (0, 1))  # (a, b) world axes for faces normal to x, y, z


# --------------------------------------------------------------------------- textures


def _hash_unit(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) value per integer lattice point (i, j): stateless, so it is vectorised."""
    h = i.astype(np.int64).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h ^= j.astype(np.int64).view(np.uint64) * np.uint64(0xD1B54A32D192ED03)
    h ^= np.uint64(seed)
    # splitmix64 finaliser: neighbouring lattice points get unrelated values
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


def _value_noise(a: np.ndarray, b: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1] on a lattice of `cell` metres."""
    fa, fb = a / cell, b / cell
    ia, ib = np.floor(fa), np.floor(fb)
    wa, wb = fa - ia, fb - ib
    wa, wb = wa * wa * (3 - 2 * wa), wb * wb * (3 - 2 * wb)
    ia, ib = ia.astype(np.int64), ib.astype(np.int64)
    bottom = _hash_unit(ia, ib, seed) * (1 - wa) + _hash_unit(ia + 1, ib, seed) * wa
    top = _hash_unit(ia, ib + 1, seed) * (1 - wa) + _hash_unit(ia + 1, ib + 1, seed) * wa
    return bottom * (1 - wb) + top * wb


@dataclass(frozen=True)
class Pattern:
    """A base colour under value noise and, optionally, a grid of cells (tiles, bricks, panels)
    each with its own shade and separated by dark joints. A cell size of None: no joints along
    that axis."""

    colour: Colour
    seed: int
    noise_cell: float = 0.15
    noise_amount: float = 0.15
    cell: tuple[float | None, float | None] = (None, None)
    cell_jitter: float = 0.0
    joint_width: float = 0.0
    joint_shade: float = 0.55
    stagger: bool = False  # brick bond: every other row of cells shifted by half a cell

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        shade = 1 + self.noise_amount * (2 * _value_noise(a, b, self.noise_cell, self.seed) - 1)
        cell_a, cell_b = self.cell
        row = np.floor(b / cell_b) if cell_b else np.zeros_like(b)
        if self.stagger and cell_a:
            a = a + 0.5 * cell_a * np.mod(row, 2)
        column = np.floor(a / cell_a) if cell_a else np.zeros_like(a)
        if self.cell_jitter:
            shade *= 1 + self.cell_jitter * (2 * _hash_unit(column, row, self.seed + 1) - 1)
        if self.joint_width:
            joint = np.zeros(a.shape, dtype=bool)
            for coordinate, size in ((a, cell_a), (b, cell_b)):
                if size:
                    joint |= np.mod(coordinate, size) < self.joint_width
            shade = np.where(joint, shade * self.joint_shade, shade)
        return np.clip(np.asarray(self.colour) * shade[:, None], 0.0, 1.0)


@dataclass(frozen=True)
class RoadMarkings:
    """Asphalt (a = x, b = z) with white lines along z: solid ones and 3 m dashes every 9 m."""

    asphalt: Pattern
    solid_lines: tuple[float, ...]  # x of each line
    dashed_lines: tuple[float, ...]
    line_width: float = 0.15

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        def on_line(centres: tuple[float, ...]) -> np.ndarray:
            return np.any([np.abs(a - x) < self.line_width / 2 for x in centres], axis=0)

        albedo = self.asphalt(a, b)
        paint = on_line(self.solid_lines) | (on_line(self.dashed_lines) & (np.mod(b, 9.0) < 3.0))
        albedo[paint] = (0.85, 0.85, 0.8)
        return albedo


@dataclass(frozen=True)
class Facade:
    """A building wall (a along the street, b = height) with one window per bay and storey."""

    wall: Pattern
    bay: float  # window spacing along the wall, m
    storey: float  # floor-to-floor height, m
    window: tuple[float, float]  # width, height, m
    sill: float  # window bottom above its storey's floor, m
    phase: float  # where the first bay starts along a, m
    seed: int

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        albedo = self.wall(a, b)
        along = a - self.phase
        in_storey = np.mod(b, self.storey)
        glass = (np.mod(along, self.bay) < self.window[0]) & (in_storey >= self.sill) & (in_storey < self.sill + self.window[1])
        # each pane reflects a little differently
        pane = _hash_unit(np.floor(along[glass] / self.bay), np.floor(b[glass] / self.storey), self.seed)
        albedo[glass] = np.array([0.10, 0.14, 0.20]) * (0.6 + 0.9 * pane[:, None])
        return albedo


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Camera:
    intrinsics: tuple[float, float, float, float]  # fx, fy, cx, cy in pixels
    height: int
    width: int
    position: Vector  # world metres
    yaw: float = 0.0  # radians, positive turns right
    pitch: float = 0.0  # radians, positive looks up


@dataclass(frozen=True)
class Box:
    lo: Vector
    hi: Vector
    faces: tuple[Texture, ...]  # six, index 2 * axis + (0 for the face at lo, 1 at hi)
    hollow: bool = False  # seen from inside (a room) rather than from outside


@dataclass(frozen=True)
class Scene:
    camera: Camera
    boxes: tuple[Box, ...]
    max_depth: float  # farther hits are rendered but their depth is 0 (no measurement)
    light: Vector  # unit vector towards the light
    ambient: float  # share of light that reaches faces turned away from it
    fog_colour: Colour  # surfaces fade to it as 1 - exp(-depth / fog_distance)
    fog_distance: float
    sky_zenith: Colour = (0.0, 0.0, 0.0)  # seen by rays that hit nothing
    sky_horizon: Colour = (0.0, 0.0, 0.0)
    captions: tuple[str, ...] = ()  # what a VLM would say about the scene, from its parameters


def _camera_to_world(camera: Camera) -> np.ndarray:
    """Rotation taking camera coordinates (y down) to world coordinates (y up)."""
    cp, sp = np.cos(camera.pitch), np.sin(camera.pitch)
    cy, sy = np.cos(camera.yaw), np.sin(camera.yaw)
    pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return yaw @ pitch @ np.diag([1.0, -1.0, 1.0])


def _ray_directions(camera: Camera) -> np.ndarray:
    """(3, H, W) world directions scaled to unit camera z, so a hit's ray parameter is its depth."""
    fx, fy, cx, cy = camera.intrinsics
    x = (np.arange(camera.width) - cx) / fx
    y = (np.arange(camera.height) - cy) / fy
    rotation = _camera_to_world(camera)[:, :, None, None]
    # float32 halves the memory traffic of ray casting and still resolves depth to ~1e-7 relative
    return (rotation[:, 0] * x + rotation[:, 1] * y[:, None] + rotation[:, 2]).astype(np.float32)


_NEAR = 1e-3  # m; the camera-z plane that bounds what a camera can see
_CORNER_AT_HI = np.array(list(itertools.product((False, True), repeat=3)))  # (8, 3): per axis, lo or hi
# the 12 edges of a box join the corners that differ on one axis
_EDGES = np.array([(i, j) for i in range(8) for j in range(i + 1, 8) if np.sum(_CORNER_AT_HI[i] != _CORNER_AT_HI[j]) == 1])


def _pixel_window(box: Box, camera: Camera, rotation: np.ndarray) -> tuple[slice, slice] | None:
    """Rows and columns that can see `box` (None: no pixel can): the bounds of the projected
    vertices of its part in front of the camera, a convex solid that projects inside their hull."""
    if box.hollow:
        return slice(None), slice(None)
    corners = np.where(_CORNER_AT_HI, box.hi, box.lo) - np.asarray(camera.position)
    corners = corners @ rotation  # camera coordinates, one corner per row
    start, end = corners[_EDGES[:, 0]], corners[_EDGES[:, 1]]
    crossing = (start[:, 2] - _NEAR) * (end[:, 2] - _NEAR) < 0
    share = (_NEAR - start[crossing, 2]) / (end[crossing, 2] - start[crossing, 2])
    near_plane_points = start[crossing] + share[:, None] * (end[crossing] - start[crossing])
    x, y, z = np.concatenate([corners[corners[:, 2] >= _NEAR], near_plane_points]).T
    if z.size == 0:
        return None
    fx, fy, cx, cy = camera.intrinsics
    u = np.clip(fx * x / z + cx, -1, camera.width + 1)
    v = np.clip(fy * y / z + cy, -1, camera.height + 1)
    columns = slice(max(int(np.floor(u.min())), 0), max(int(np.ceil(u.max())) + 1, 0))
    rows = slice(max(int(np.floor(v.min())), 0), max(int(np.ceil(v.max())) + 1, 0))
    return rows, columns


def _intersect(box: Box, origin: Vector, inverse: np.ndarray, exit_faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter (inf on a miss) and face index per ray, by the slab method. `exit_faces[k]`
    is the face of an axis-k slab through which each ray leaves it (2k + 1 when heading to hi)."""
    candidates, faces, exits = [], [], []
    for axis in range(3):
        t_lo = (box.lo[axis] - origin[axis]) * inverse[axis]
        t_hi = (box.hi[axis] - origin[axis]) * inverse[axis]
        if box.hollow:  # the camera is inside: the ray leaves through the nearest exit plane
            candidates.append(np.maximum(t_lo, t_hi))
            faces.append(exit_faces[axis])
        else:  # the ray enters through the farthest entry plane, if that comes before every exit
            candidates.append(np.minimum(t_lo, t_hi))
            faces.append(exit_faces[axis] ^ 1)
            exits.append(np.maximum(t_lo, t_hi))
    preferred = np.less if box.hollow else np.greater
    t, face = candidates[0], faces[0]
    for axis in (1, 2):
        better = preferred(candidates[axis], t)
        t, face = np.where(better, candidates[axis], t), np.where(better, faces[axis], face)
    if not box.hollow:
        t[(t > np.minimum(np.minimum(exits[0], exits[1]), exits[2])) | (t <= 0)] = np.inf
    return t, face


def _render(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) float32 planar depth of `scene` by exact ray casting."""
    camera = scene.camera
    origin = tuple(float(c) for c in camera.position)
    rotation = _camera_to_world(camera)
    directions = _ray_directions(camera)
    # rays parallel to a slab would give 0 * inf = nan; a tiny component keeps them missing it
    inverse = 1 / np.where(directions == 0, np.float32(1e-12), directions)
    exit_faces = (2 * np.arange(3)[:, None, None] + (inverse > 0)).astype(np.int32)

    shape = (camera.height, camera.width)
    depth = np.full(shape, np.inf, dtype=np.float32)
    surface = np.full(shape, -1, dtype=np.int32)  # 6 * box index + face index; -1 = sky
    for index, box in enumerate(scene.boxes):
        window = _pixel_window(box, camera, rotation)
        if window is None:
            continue
        t, face = _intersect(box, origin, inverse[(slice(None), *window)], exit_faces[(slice(None), *window)])
        nearer = t < depth[window]
        np.copyto(depth[window], t, where=nearer)
        np.copyto(surface[window], 6 * index + face, where=nearer)

    # shade surface by surface: each face is a plane with one normal, so one Lambert factor
    directions = directions.reshape(3, -1)
    flat_depth, flat_surface = depth.ravel(), surface.ravel()
    by_surface = np.argsort(flat_surface, kind="stable")
    surface_ids, starts = np.unique(flat_surface[by_surface], return_index=True)
    colour = np.empty((flat_surface.size, 3))
    for surface_id, pixels in zip(surface_ids, np.split(by_surface, starts[1:]), strict=True):
        if surface_id < 0:
            colour[pixels] = _sky(scene, directions[:, pixels])
            continue
        box, face = scene.boxes[surface_id // 6], surface_id % 6
        axis, at_hi = divmod(face, 2)
        t = flat_depth[pixels]
        a_axis, b_axis = _FACE_PLANE_AXES[axis]
        albedo = box.faces[face](origin[a_axis] + t * directions[a_axis, pixels], origin[b_axis] + t * directions[b_axis, pixels])
        outward = 1.0 if at_hi else -1.0  # a room's faces are seen from inside
        lambert = max(0.0, (-outward if box.hollow else outward) * scene.light[axis])
        fog = 1 - np.exp(-t / scene.fog_distance)[:, None]
        lit = albedo * (scene.ambient + (1 - scene.ambient) * lambert)
        colour[pixels] = lit * (1 - fog) + np.asarray(scene.fog_colour) * fog

    image = np.round(np.clip(colour, 0.0, 1.0) * 255).astype(np.uint8).reshape(*shape, 3)
    return image, np.where(depth <= scene.max_depth, depth, np.float32(0))


def _sky(scene: Scene, directions: np.ndarray) -> np.ndarray:
    """(N, 3) sky colour of rays that hit nothing, from the horizon colour up to the zenith's."""
    elevation = directions[1] / np.linalg.norm(directions, axis=0)
    towards_zenith = np.clip(elevation * 2.5, 0.0, 1.0)[:, None] ** 0.7
    horizon, zenith = np.asarray(scene.sky_horizon), np.asarray(scene.sky_zenith)
    return horizon + (zenith - horizon) * towards_zenith


# --------------------------------------------------------------------------- scene generators


def _random_colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> Colour:
    return colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value))


def _pattern_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**62))


def _all_faces(texture: Texture) -> tuple[Texture, ...]:
    return (texture,) * 6


def _scaled_intrinsics(kind: str, height: int, width: int) -> tuple[float, float, float, float]:
    fx, fy, cx, cy, reference_width, reference_height = _REFERENCE_CAMERA[kind]
    sx, sy = width / reference_width, height / reference_height
    return fx * sx, fy * sy, cx * sx, cy * sy


def _room_textures(rng: np.random.Generator) -> tuple[Texture, ...]:
    """Faces of a room: walls with vertical panels and a dark skirting, 0.5 m floor tiles,
    0.6 m ceiling tiles; the back wall is sometimes painted another colour."""

    def wall(colour: Colour) -> Texture:
        return Pattern(
            colour,
            _pattern_seed(rng),
            noise_cell=0.2,
            noise_amount=0.12,
            cell=(0.4, None),
            cell_jitter=0.07,
            joint_width=0.02,
            joint_shade=0.8,
        )

    wall_colour = _random_colour(rng, (0.05, 0.35), (0.6, 0.9))
    side_wall = wall(wall_colour)
    back_wall = wall(_random_colour(rng, (0.1, 0.5), (0.5, 0.85))) if rng.uniform() < 0.3 else side_wall
    floor = Pattern(
        _random_colour(rng, (0.1, 0.5), (0.35, 0.75)),
        _pattern_seed(rng),
        noise_cell=0.1,
        noise_amount=0.2,
        cell=(0.5, 0.5),
        cell_jitter=0.12,
        joint_width=0.025,
    )
    ceiling = Pattern(
        _random_colour(rng, (0.0, 0.1), (0.8, 0.95)),
        _pattern_seed(rng),
        noise_cell=0.25,
        noise_amount=0.06,
        cell=(0.6, 0.6),
        joint_width=0.02,
        joint_shade=0.75,
    )
    # x lo, x hi, floor, ceiling, front (behind the camera), back
    return side_wall, side_wall, floor, ceiling, side_wall, back_wall


def _furniture(rng: np.random.Generator, room_lo: np.ndarray, room_hi: np.ndarray) -> Box:
    """A box on the floor ahead of the camera, often against a wall as furniture stands."""
    size = rng.uniform([0.4, 0.4, 0.4], [1.8, 2.0, 1.2])  # width, height, depth
    free_lo = np.array([room_lo[0], 0.0, 1.2])  # keep clear of the camera at z = 0
    size = np.minimum(size, room_hi - free_lo)
    lo = free_lo + rng.uniform(0, 1, 3) * (room_hi - free_lo - size)
    lo[1] = 0.0
    against = rng.integers(4)  # 0: left wall, 1: right wall, 2: back wall, 3: free-standing
    if against == 0:
        lo[0] = room_lo[0]
    elif against == 1:
        lo[0] = room_hi[0] - size[0]
    elif against == 2:
        lo[2] = room_hi[2] - size[2]
    texture = Pattern(
        _random_colour(rng, (0.2, 0.7), (0.25, 0.8)),
        _pattern_seed(rng),
        noise_cell=0.1,
        noise_amount=0.15,
        cell=(None, 0.35),
        cell_jitter=0.05,
        joint_width=0.02,
    )
    return Box(tuple(lo), tuple(lo + size), _all_faces(texture))


def _indoor_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    room_width, room_length, room_height = rng.uniform([3.0, 4.0, 2.4], [6.0, 9.5, 3.0])
    left_share = rng.uniform(0.3, 0.7)  # where the camera stands across the room
    behind = rng.uniform(0.3, 1.0)  # room length behind the camera
    room_lo = np.array([-left_share * room_width, 0.0, -behind])
    room_hi = np.array([(1 - left_share) * room_width, room_height, room_length - behind])
    room = Box(tuple(room_lo), tuple(room_hi), _room_textures(rng), hollow=True)
    furniture = tuple(_furniture(rng, room_lo, room_hi) for _ in range(rng.integers(1, 6)))
    camera = Camera(
        _scaled_intrinsics("indoor", height, width),
        height,
        width,
        position=(0.0, rng.uniform(1.1, 1.6), 0.0),
        yaw=np.radians(rng.uniform(-20, 20)),
        pitch=np.radians(rng.uniform(-10, 10)),
    )
    # A ceiling light ahead: floors and back walls lit, ceilings in the ambient share only.
    # Aerial perspective (colour and contrast fade towards a light haze with distance) is a
    # classical monocular cue; it is exaggerated here because texture scale alone is too subtle
    # for the demo's random-weight encoder to pick up patch by patch (a raw-pixel probe of a
    # single patch did no better than the mean depth without it).
    return Scene(
        camera,
        (room, *furniture),
        DEPTH_RANGE["indoor"],
        light=(0.24, 0.78, -0.58),
        ambient=0.45,
        fog_colour=(0.62, 0.6, 0.58),
        fog_distance=5.0,
        captions=_describe_room(room, furniture, camera),
    )


def _buildings(rng: np.random.Generator, facade_x: float, side: int) -> list[Box]:
    """Building blocks along one side of the street (side -1: left, +1: right), with the odd gap."""
    blocks = []
    z = -20.0
    while z < 160.0:
        length = rng.uniform(8.0, 25.0)
        if rng.uniform() > 0.12:  # else a side street
            front = facade_x + rng.choice([0.0, rng.uniform(0.2, 1.5)])  # some are set back
            x_near, x_far = side * front, side * (front + 15.0)
            wall = Pattern(
                _random_colour(rng, (0.05, 0.5), (0.4, 0.85)),
                _pattern_seed(rng),
                noise_cell=0.2,
                noise_amount=0.12,
                cell=(0.25, 0.08),
                cell_jitter=0.06,
                joint_width=0.012,
                joint_shade=0.8,
                stagger=True,
            )
            storey = rng.uniform(3.0, 3.6)
            facade = Facade(
                wall,
                bay=rng.uniform(2.4, 3.6),
                storey=storey,
                window=(1.2, 1.5),
                sill=0.9,
                phase=rng.uniform(0, 2),
                seed=_pattern_seed(rng),
            )
            lo = (min(x_near, x_far), 0.0, z)
            hi = (max(x_near, x_far), storey * rng.integers(2, 7), z + length)
            blocks.append(Box(lo, hi, _all_faces(facade)))
        z += length
    return blocks


def _cars(rng: np.random.Generator, road_half_width: float) -> list[Box]:
    """Car-like pairs of boxes (body, cabin) parked along either kerb or ahead in a lane."""
    boxes = []
    taken: list[tuple[float, float]] = []
    for _ in range(rng.integers(1, 6)):
        x = rng.choice([-1, 1]) * (road_half_width - 1.2) if rng.uniform() < 0.7 else rng.uniform(-1, 1) * 1.75
        z = rng.uniform(6.0, 60.0)
        if any(abs(x - x0) < 2.2 and abs(z - z0) < 5.0 for x0, z0 in taken):
            continue
        taken.append((x, z))
        paint = Pattern(_random_colour(rng, (0.3, 0.9), (0.2, 0.9)), _pattern_seed(rng), noise_cell=0.1, noise_amount=0.08)
        glass = Pattern((0.12, 0.14, 0.18), _pattern_seed(rng), noise_cell=0.1, noise_amount=0.2)
        boxes.append(Box((x - 0.9, 0.15, z - 2.15), (x + 0.9, 1.0, z + 2.15), _all_faces(paint)))
        roof = paint  # the cabin's top is painted, its sides are windows
        boxes.append(Box((x - 0.8, 1.0, z - 1.2), (x + 0.8, 1.45, z + 0.9), (glass, glass, glass, roof, glass, glass)))
    return boxes


def _outdoor_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    left_facade, right_facade = rng.uniform(5.0, 12.0, 2)
    road_half_width = rng.uniform(3.0, min(7.0, left_facade - 1.5, right_facade - 1.5))
    dashed = (0.0, -road_half_width / 2, road_half_width / 2) if road_half_width > 5.5 else (0.0,)
    road = RoadMarkings(
        Pattern(_random_colour(rng, (0.0, 0.1), (0.25, 0.4)), _pattern_seed(rng), noise_cell=0.1, noise_amount=0.25),
        solid_lines=(-road_half_width + 0.3, road_half_width - 0.3),
        dashed_lines=dashed,
    )
    ground = Box((-500.0, -1.0, -50.0), (500.0, 0.0, 500.0), _all_faces(road))
    paving = Pattern(
        _random_colour(rng, (0.0, 0.2), (0.45, 0.7)),
        _pattern_seed(rng),
        noise_cell=0.1,
        noise_amount=0.12,
        cell=(0.3, 0.3),
        cell_jitter=0.08,
        joint_width=0.015,
    )
    sidewalks = (
        Box((-left_facade, 0.0, -50.0), (-road_half_width, 0.15, 500.0), _all_faces(paving)),
        Box((road_half_width, 0.0, -50.0), (right_facade, 0.15, 500.0), _all_faces(paving)),
    )
    buildings = _buildings(rng, left_facade, -1) + _buildings(rng, right_facade, 1)
    cars = _cars(rng, road_half_width)
    boxes = (ground, *sidewalks, *buildings, *cars)
    camera = Camera(
        _scaled_intrinsics("outdoor", height, width),
        height,
        width,
        position=(rng.uniform(0.25, 0.75) * road_half_width, 1.65, 0.0),  # driving in a right-hand lane
        yaw=np.radians(rng.uniform(-3, 3)),
        pitch=np.radians(rng.uniform(-1, 1)),
    )
    horizon = np.array(_random_colour(rng, (0.05, 0.15), (0.85, 0.95)))
    zenith = np.array(colorsys.hsv_to_rgb(rng.uniform(0.55, 0.62), rng.uniform(0.35, 0.6), rng.uniform(0.75, 0.9)))
    # a high sun from the right: right-hand facades lit, left-hand ones in shade
    return Scene(
        camera,
        boxes,
        DEPTH_RANGE["outdoor"],
        light=(-0.45, 0.8, 0.4),
        ambient=0.4,
        fog_colour=tuple(horizon),
        fog_distance=150.0,
        sky_zenith=tuple(zenith),
        sky_horizon=tuple(horizon),
        captions=_describe_street(buildings, cars, road_half_width, left_facade + right_facade, tuple(zenith)),
    )


# --------------------------------------------------------------------------- captions
# A few lines per scene, as a VLM would describe the image (TR2M's text input). They are derived
# from the drawn parameters only, after all random draws, so they never change a scene.

_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_PLURALS = {"box": "boxes"}  # the rest take an s
_HUES = (
    (15, "red"),
    (40, "orange"),
    (65, "yellow"),
    (160, "green"),
    (195, "teal"),
    (255, "blue"),
    (290, "purple"),
    (335, "pink"),
    (360, "red"),
)


def _count(n: int, noun: str) -> str:
    """'three boxes', 'one table', '12 buildings'."""
    number = _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)
    return f"{number} {noun if n == 1 else _PLURALS.get(noun, noun + 's')}"


def _article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _colour_name(colour: Colour) -> str:
    """A plain colour word for an RGB albedo ('beige', 'pale blue', 'dark green', 'light grey')."""
    h, s, v = colorsys.rgb_to_hsv(*colour)
    if s < 0.15:
        return "white" if v >= 0.82 else "light grey" if v >= 0.6 else "grey" if v >= 0.35 else "dark grey"
    hue = next(name for limit, name in _HUES if h * 360 < limit)
    if s < 0.35 and v >= 0.55:
        return "beige" if hue in ("orange", "yellow") else f"pale {hue}"
    if v < 0.4:
        return "brown" if hue in ("orange", "yellow") else f"dark {hue}"
    return hue


def _listing(items: list[str]) -> str:
    """Counted nouns in order of first appearance: 'two tables, a cabinet'."""
    counts = dict.fromkeys(items, 0)
    for item in items:
        counts[item] += 1
    return ", ".join(_article(item) if n == 1 else _count(n, item) for item, n in counts.items())


def _furniture_kind(box: Box) -> str:
    width, height, depth = np.subtract(box.hi, box.lo)
    if height >= 1.4:
        return "cabinet"
    if height >= 0.9:
        return "dresser"
    return "table" if max(width, depth) >= 1.0 else "box"


def _describe_room(room: Box, furniture: tuple[Box, ...], camera: Camera) -> tuple[str, ...]:
    length = room.hi[2] - room.lo[2]  # 4 to 9.5 m
    size = "small" if length < 5.8 else "medium-sized" if length < 7.7 else "large"
    n = len(furniture)
    furnished = "sparsely furnished" if n == 1 else "furnished" if n <= 3 else "cluttered"
    wall, floor = _colour_name(room.faces[0].colour), _colour_name(room.faces[2].colour)
    pitch = np.degrees(camera.pitch)
    view = "looking slightly down" if pitch < -4 else "looking slightly up" if pitch > 4 else "at eye level"
    first = furniture[0]
    if np.isclose(first.lo[0], room.lo[0]):
        place = "against the left wall"
    elif np.isclose(first.hi[0], room.hi[0]):
        place = "against the right wall"
    elif np.isclose(first.hi[2], room.hi[2]):
        place = "against the far wall"
    else:
        place = "in the middle of the room"
    lines = [
        f"A {size} room with {_count(n, 'piece')} of furniture and {wall} walls.",
        f"An indoor view of a {furnished} {size} room with a {floor} tiled floor, {view}.",
        f"{_article(_colour_name(first.faces[0].colour)).capitalize()} {_furniture_kind(first)} stands {place}.",
    ]
    back = _colour_name(room.faces[5].colour)
    if back != wall:
        lines.append(f"The far wall is painted {back}, the other walls {wall}.")
    lines.append(f"An image with a floor, walls, a ceiling, {_listing([_furniture_kind(b) for b in furniture])}.")
    return tuple(lines)


def _describe_street(buildings: list[Box], cars: list[Box], road_half_width: float, street_width: float, sky: Colour) -> tuple[str, ...]:
    bodies = cars[::2]  # each car is a body then a cabin
    kerb = road_half_width - 1.2
    parked = sum(bool(np.isclose(abs(b.lo[0] + b.hi[0]) / 2, kerb)) for b in bodies)
    ahead = len(bodies) - parked
    near = [b for b in buildings if b.lo[2] < 60.0 and b.hi[2] > 0.0]  # the ones the camera shows clearly
    heights = [b.hi[1] for b in near]
    rise = "low" if np.mean(heights) < 10 else "mid-rise" if np.mean(heights) < 15 else "tall"
    colours = [_colour_name(b.faces[0].wall.colour) for b in near]
    facade = max(dict.fromkeys(colours), key=colours.count)  # the most common, first seen on a tie
    street = "a narrow" if street_width < 16 else "an open"
    lanes = "four" if road_half_width > 5.5 else "two"
    traffic = [f"{_count(parked, 'car')} {'is' if parked == 1 else 'are'} parked along the kerb"] * bool(parked)
    traffic += [f"{_count(ahead, 'car')} {'is' if ahead == 1 else 'are'} in the lane ahead"] * bool(ahead)
    return (
        (
            f"{street.capitalize()} street with {_count(len(near), 'building')} and {_count(len(bodies), 'car')} "
            f"under a {_colour_name(sky)} sky."
        ),
        f"A driving scene on a {lanes}-lane road lined with {rise} {facade} buildings.",
        " and ".join(traffic).capitalize() + "." if traffic else "There are no cars on the road.",
        (f"An image with a road, lane markings, two sidewalks, {_count(len(near), 'building')}, {_count(len(bodies), 'car')}, the sky."),
    )


_GENERATORS = {"indoor": _indoor_scene, "outdoor": _outdoor_scene}


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown synthetic scene {what} {value!r}; valid: {', '.join(choices)}")


def render_scene(kind: str, seed: int, height: int, width: int) -> RGBDSample:
    """One random scene of `kind`; the same (kind, seed, size) always gives the same arrays."""
    _check_choice("kind", kind, tuple(_GENERATORS))
    scene = _GENERATORS[kind](np.random.default_rng(seed), height, width)
    image, depth = _render(scene)
    intrinsics = np.asarray(scene.camera.intrinsics, dtype=np.float32)
    return RGBDSample(image, depth, intrinsics, f"{kind}_seed{seed}", list(scene.captions))


class SyntheticScenes(Dataset):
    """`size` scenes of one split, rendered on access; splits and dataset seeds never share a scene."""

    def __init__(self, kind: str, split: str, size: int, height: int, width: int, seed: int = 0) -> None:
        _check_choice("kind", kind, tuple(_GENERATORS))
        _check_choice("split", split, SPLITS)
        for name, value, least in (("size", size, 0), ("seed", seed, 0), ("height", height, 1), ("width", width, 1)):
            if value < least:
                raise ConfigError(f"synthetic scenes: {name} must be >= {least}, got {value}")
        self.kind, self.split, self.size = kind, split, size
        self.height, self.width, self.seed = height, width, seed

    def scene_seed(self, index: int) -> int:
        # An injective packing of (seed, split, index), so no two of them render the same scene.
        return ((self.seed * len(SPLITS) + SPLITS.index(self.split)) << 32) | index

    def __len__(self) -> int:
        return self.size

    @property
    def names(self) -> list[str]:
        """Frame names without rendering any scene (cache keys use them)."""
        return [self._name(i) for i in range(self.size)]

    def _name(self, i: int) -> str:
        return f"{self.kind}_{self.split}_{i:05d}"

    def __getitem__(self, i: int) -> RGBDSample:
        if not 0 <= i < self.size:
            raise IndexError(f"scene {i} out of range for {self.size} {self.split} scenes")
        sample = render_scene(self.kind, self.scene_seed(i), self.height, self.width)
        return dataclasses.replace(sample, name=self._name(i))
