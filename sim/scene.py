"""The PyBullet world of the RGB-stacking cell: floor, sloped basket, cameras and the three RGB objects.

Physics runs at 240 Hz, 12 substeps per 50 ms control step (the original steps MuJoCo at 2 kHz). 240 Hz is
PyBullet's tuned default; at 500 Hz stacks were no steadier and the rollout was about twice as slow.
Contact parameters (documented in docs/sim.md): PyBullet multiplies the two bodies' friction coefficients;
objects 0.8 and basket 0.8 give 0.64 object-object and object-basket (3D-printed PLA on PLA and on plywood
is about 0.3-0.6; the upper end, as the printed parts have a textured surface), finger pads 1.0 give 0.8 on
objects (rubber on PLA). A little rolling/spinning friction stops meshes rocking forever on edges.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pybullet as p

from gato_robot.sim import objects
from gato_robot.sim import workspace as ws

PHYSICS_HZ = 240
SUBSTEPS = int(PHYSICS_HZ / ws.CONTROL_HZ)
OBJECT_FRICTION = 0.8
BASKET_FRICTION = 0.8
ROLLING_FRICTION = 1e-4
SPINNING_FRICTION = 1e-3
SETTLE_MAX_S = 2.0
SETTLE_SPEED = 0.005  # m/s: objects count as settled below this speed

# Camera poses in the world frame, from dm_robotics' rgb_basket.py (DEFAULT_CAMERA_KWARGS): position,
# MuJoCo quaternion (w, x, y, z; the camera looks along its -z axis with +y up) and vertical field of view.
CAMERAS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float, float], float]] = {
    "basket_front_left": ((0.970, -0.375, 0.235), (0.7815, 0.4900, 0.2050, 0.3272), 35.0),
    "basket_front_right": ((0.970, 0.375, 0.235), (0.3272, 0.2050, 0.4900, 0.7815), 35.0),
    "basket_back_left": ((0.060, -0.260, 0.390), (0.754, 0.373, -0.250, -0.480), 30.0),
}


@dataclasses.dataclass
class RgbObject:
    color: str
    object_id: str
    body: int
    vertices: np.ndarray  # (V, 3) mesh vertices relative to the body frame (the volume centroid)


def _camera_matrices(name: str, size: int) -> tuple[list[float], list[float]]:
    pos, (w, x, y, z), fovy = CAMERAS[name]
    rot = np.array(p.getMatrixFromQuaternion((x, y, z, w))).reshape(3, 3)
    forward, up = -rot[:, 2], rot[:, 1]
    eye = np.array(pos)
    view = p.computeViewMatrix(eye.tolist(), (eye + forward).tolist(), up.tolist())
    proj = p.computeProjectionMatrixFOV(fovy, 1.0, 0.02, 3.0)
    return view, proj


class Scene:
    """Static cell (floor + basket) and the per-episode objects of one PyBullet client."""

    def __init__(self, client: int):
        self.client = client
        # The static cell is drawn in a second, visual-only client and rendered once per camera: TinyRenderer's
        # cost follows the pixels it fills, and the floor and basket fill most of every image (8 of 11 ms per
        # 128x128 camera). Each step renders only the robot and objects and composites them by depth.
        self.backdrop = p.connect(p.DIRECT)
        self._backdrops: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._cameras: dict[tuple[str, int], tuple[list[float], list[float]]] = {}
        self._backdrop_built = False
        self.objects: list[RgbObject] = []
        self.static_bodies: list[int] = []
        self.reset_world()

    def reset_world(self) -> None:
        """Empty the physics client and rebuild the cell. Called at every episode reset: PyBullet keeps solver
        and contact caches across episodes, so without a fresh world a seed's rollout would depend on the
        episodes run before it in the same process."""
        c = self.client
        p.resetSimulation(physicsClientId=c)
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        p.setTimeStep(1.0 / PHYSICS_HZ, physicsClientId=c)
        p.setPhysicsEngineParameter(numSolverIterations=50, physicsClientId=c)
        self.objects = []
        self.static_bodies = self._build_cell()
        self._backdrop_built = True

    def _box(self, half: tuple[float, float, float], pos: np.ndarray, quat: tuple, rgba: tuple) -> int:
        """A static box: collision in the physics client, visual only in the backdrop client."""
        c, b = self.client, self.backdrop
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=c)
        # without a visual shape TinyRenderer would draw the collision shape; a transparent one is skipped
        hidden = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=(0, 0, 0, 0), physicsClientId=c)
        body = p.createMultiBody(0, col, hidden, list(pos), quat, physicsClientId=c)
        p.changeDynamics(body, -1, lateralFriction=BASKET_FRICTION, physicsClientId=c)
        if not self._backdrop_built:
            vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=rgba, physicsClientId=b)
            p.createMultiBody(0, -1, vis, list(pos), quat, physicsClientId=b)
        return body

    def _build_cell(self) -> list[int]:
        """Floor slab, basket floor and four 25.5-degree panels, as boxes (a few triangles to render)."""
        centre = ws.BASKET_CENTER
        bodies = [self._box((1.0, 1.0, 0.01), np.array([0.4, 0.0, -0.011]), (0, 0, 0, 1), (0.45, 0.45, 0.45, 1))]
        half = ws.BASKET_FLOOR_HALF
        bodies.append(self._box((half, half, 0.005), centre + [0, 0, -0.005], (0, 0, 0, 1), (0.5, 0.5, 0.5, 1)))
        slope = np.deg2rad(ws.BASKET_SLOPE_DEG)
        length = ws.BASKET_RUN / np.cos(slope)
        thick = 0.005
        for k in range(4):
            yaw = k * np.pi / 2
            # panel centre: halfway up the slope, pushed back by half its thickness along the panel normal
            outward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
            mid = centre + outward * (half + ws.BASKET_RUN / 2) + [0, 0, ws.BASKET_RUN * np.tan(slope) / 2]
            normal = -outward * np.sin(slope) + np.array([0, 0, np.cos(slope)])
            quat = p.getQuaternionFromEuler((0.0, -slope, yaw))
            pos = mid - normal * thick
            width = half + ws.BASKET_RUN + 0.02
            bodies.append(self._box((length / 2, width, thick), pos, quat, (0.65, 0.65, 0.65, 1)))
        return bodies

    # -- objects --------------------------------------------------------------------------------------------
    def clear_objects(self) -> None:
        for o in self.objects:
            p.removeBody(o.body, physicsClientId=self.client)
        self.objects = []

    def load_objects(self, triplet: tuple[str, str, str]) -> None:
        """Create red, green and blue bodies (convex meshes, 0.2 kg) parked out of the way."""
        self.clear_objects()
        c = self.client
        for k, (color, object_id) in enumerate(zip(objects.COLORS, triplet)):
            path = str(objects.mesh_files()[object_id])
            centroid = objects.mesh_centroid(object_id)
            offset = (-centroid).tolist()
            col = p.createCollisionShape(p.GEOM_MESH, fileName=path, collisionFramePosition=offset,
                                         physicsClientId=c)
            vis = p.createVisualShape(p.GEOM_MESH, fileName=path, visualFramePosition=offset,
                                      rgbaColor=objects.RGBA[color], physicsClientId=c)
            body = p.createMultiBody(objects.OBJECT_MASS_KG, col, vis, [2.0 + k, 2.0, 0.1], physicsClientId=c)
            p.changeDynamics(body, -1, lateralFriction=OBJECT_FRICTION, rollingFriction=ROLLING_FRICTION,
                             spinningFriction=SPINNING_FRICTION, restitution=0.0, physicsClientId=c)
            self.objects.append(RgbObject(color, object_id, body, objects.mesh_vertices(object_id) - centroid))

    def drop_objects(self, rng: np.random.Generator) -> None:
        """Drop the objects from z = 0.12 m with uniformly random 3D orientations, then let them settle."""
        placed: list[np.ndarray] = []
        for k, o in enumerate(self.objects):
            for _ in range(50):  # keep drop points apart so the objects do not start interpenetrating
                xy = rng.uniform(ws.DROP_LO, ws.DROP_HI)
                if all(np.linalg.norm(xy - q) > 0.07 for q in placed):
                    break
            placed.append(xy)
            quat = rng.normal(size=4)
            quat /= np.linalg.norm(quat)  # a normalised Gaussian 4-vector is a uniform random rotation
            radius = float(np.linalg.norm(o.vertices, axis=1).max())
            z = max(ws.DROP_Z, radius + 0.005) + 0.0 * k
            p.resetBasePositionAndOrientation(o.body, [xy[0], xy[1], z], quat.tolist(), physicsClientId=self.client)
            p.resetBaseVelocity(o.body, [0, 0, 0], [0, 0, 0], physicsClientId=self.client)

    def settle(self, step_fn) -> None:
        """Step the physics (``step_fn`` runs one substep) until every object is still, at most 2 s."""
        for i in range(int(SETTLE_MAX_S * PHYSICS_HZ)):
            step_fn()
            if i % 12 == 11 and all(
                np.linalg.norm(p.getBaseVelocity(o.body, physicsClientId=self.client)[0]) < SETTLE_SPEED
                for o in self.objects
            ):
                break

    def object_poses(self) -> np.ndarray:
        """(3, 7) red, green, blue: centre position and quaternion xyzw."""
        out = np.zeros((len(self.objects), 7))
        for k, o in enumerate(self.objects):
            pos, quat = p.getBasePositionAndOrientation(o.body, physicsClientId=self.client)
            out[k, :3], out[k, 3:] = pos, quat
        return out

    def object_vertices(self) -> list[np.ndarray]:
        """Each object's mesh vertices in the world frame."""
        out = []
        for o, pose in zip(self.objects, self.object_poses()):
            rot = np.array(p.getMatrixFromQuaternion(pose[3:])).reshape(3, 3)
            out.append(o.vertices @ rot.T + pose[:3])
        return out

    def touching(self, body_a: int, bodies: list[int]) -> bool:
        return any(p.getContactPoints(body_a, b, physicsClientId=self.client) for b in bodies)

    # -- cameras --------------------------------------------------------------------------------------------
    def render(self, name: str, size: int) -> np.ndarray:
        """(size, size, 3) uint8 RGB from the named camera (TinyRenderer, no segmentation mask)."""
        key = (name, size)
        if key not in self._cameras:
            self._cameras[key] = _camera_matrices(name, size)
        view, proj = self._cameras[key]
        if key not in self._backdrops:
            self._backdrops[key] = self._snapshot(self.backdrop, size, view, proj)
        rgb_static, depth_static = self._backdrops[key]
        rgb, depth = self._snapshot(self.client, size, view, proj)
        return np.where((depth < depth_static)[:, :, None], rgb, rgb_static)

    @staticmethod
    def _snapshot(client: int, size: int, view: list[float], proj: list[float]) -> tuple[np.ndarray, np.ndarray]:
        _, _, rgba, depth, _ = p.getCameraImage(
            size, size, view, proj, renderer=p.ER_TINY_RENDERER, flags=p.ER_NO_SEGMENTATION_MASK,
            shadow=0, physicsClientId=client,
        )
        rgb = np.asarray(rgba, np.uint8).reshape(size, size, 4)[:, :, :3]
        return rgb, np.asarray(depth, np.float32).reshape(size, size)

    def close(self) -> None:
        if p.isConnected(self.backdrop):
            p.disconnect(self.backdrop)
