"""Zero-lag offline smoothing of face tracks.

Every coordinate of a track (10 landmark values, 4 box values, and the dense mesh when every detection has
one) is smoothed over time by a Rauch-Tung-Striebel smoother on a constant-velocity Kalman model: a
forward Kalman pass followed by a backward pass that corrects each frame with the frames after it. Because
the backward pass sees the future, the result does not trail behind real motion the way a causal filter
(or a one-way One-Euro filter) does: a face moving at constant velocity is reproduced exactly, whatever its
speed, and only changes of velocity are softened.

The model: position and velocity per coordinate; the velocity may change by a white-noise acceleration of
standard deviation ``accel_std``; detections see the position with noise ``measurement_std``. Both are
given as fractions of the track's face size (median box size), so one setting suits faces of any size.
Their ratio is the strength: a larger ``measurement_std`` (or smaller ``accel_std``) smooths harder.
Frames without an observation (gaps, marked ``interpolated``) are filled by the smoother's own prediction,
which is a smooth cubic-like curve through the neighbouring detections. Tracks start fresh (no state is
carried across tracks, hence across cuts). Faces given by the host are authoritative: they are used as
observations and left as they are.

Convention: time is counted in listed frames (consecutive entries of the clip's frame list are one step
apart); coordinates are frame pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError, SettingsError
from ..faces import Face, FaceTrack
from .interpolate import listed_positions

__all__ = ["SmoothParams", "rts_smooth", "smooth_track"]

# Residual power (3-frame mean) this many times the track's median marks a change of motion, where the
# acceleration allowance is raised by _KINK_BOOST for a second pass.
_KINK_FACTOR = 6.0
_KINK_BOOST = 100.0


@dataclass(frozen=True)
class SmoothParams:
    """Smoothing strength, as fractions of face size.

    measurement_std: expected per-frame jitter of detected points (0.01 = 1% of the face size).
    accel_std: how much the velocity may change per frame (0.003 = 0.3% of the face size per frame^2).
    Raising ``measurement_std`` or lowering ``accel_std`` smooths harder; their ratio is what counts.
    """

    measurement_std: float = 0.01
    accel_std: float = 0.003

    def __post_init__(self) -> None:
        if not self.measurement_std > 0 or not self.accel_std > 0:
            raise SettingsError(
                f"smoothing needs measurement_std > 0 and accel_std > 0, got {self.measurement_std}, {self.accel_std}"
            )


def _rts(z: np.ndarray, obs: np.ndarray, r: float, q: np.ndarray) -> np.ndarray:
    """One RTS pass; ``q`` (T,) is the acceleration variance entering each step (q[t]: from t-1 to t).

    The model's covariances do not depend on the data: they are worked out once a step as the 2 x 2 numbers
    they are, and every column's position and velocity then move in whole rows (the columns share them)."""
    t_len = z.shape[0]
    first = int(np.argmax(obs))
    pos = z[first].astype(np.float64, copy=True)
    vel = np.zeros_like(pos)
    # Diffuse prior (the first observation is applied in the loop): the data alone set position and velocity.
    p00, p01, p11 = 1e6 * r, 0.0, 1e6 * r
    pos_f, vel_f = np.empty_like(z, np.float64), np.empty_like(z, np.float64)  # filtered, a row a step
    pos_p, vel_p = np.empty_like(pos_f), np.empty_like(pos_f)  # predicted
    cov_f: list[tuple[float, float, float]] = []
    cov_p: list[tuple[float, float, float]] = []
    for t in range(t_len):
        if t > first:
            # x <- F x, P <- F P F' + q [[1/3, 1/2], [1/2, 1]] with F = [[1, 1], [0, 1]] (white-noise acceleration)
            pos = pos + vel
            p00, p01, p11 = (p00 + 2.0 * p01 + p11 + q[t] * (1.0 / 3.0), p01 + p11 + q[t] * 0.5, p11 + q[t])
        pos_p[t], vel_p[t] = pos, vel
        cov_p.append((p00, p01, p11))
        if obs[t] and t >= first:
            s = p00 + r
            k0, k1 = p00 / s, p01 / s
            innovation = z[t] - pos
            pos = pos + k0 * innovation
            vel = vel + k1 * innovation
            p00, p01, p11 = p00 - k0 * p00, 0.5 * ((p01 - k0 * p01) + (p01 - k1 * p00)), p11 - k1 * p01
        pos_f[t], vel_f[t] = pos, vel
        cov_f.append((p00, p01, p11))
    pos_s, vel_s = pos_f.copy(), vel_f.copy()
    for t in range(t_len - 2, first - 1, -1):
        # C = Pf[t] F' inv(Pp[t+1]); xs[t] = xf[t] + C (xs[t+1] - xp[t+1])
        f00, f01, f11 = cov_f[t]
        a00, a01, a10, a11 = f00 + f01, f01, f01 + f11, f11  # Pf F'
        b00, b01, b11 = cov_p[t + 1]
        det = b00 * b11 - b01 * b01
        i00, i01, i11 = b11 / det, -b01 / det, b00 / det
        c00, c01 = a00 * i00 + a01 * i01, a00 * i01 + a01 * i11
        c10, c11 = a10 * i00 + a11 * i01, a10 * i01 + a11 * i11
        d_pos, d_vel = pos_s[t + 1] - pos_p[t + 1], vel_s[t + 1] - vel_p[t + 1]
        pos_s[t] = pos_f[t] + c00 * d_pos + c01 * d_vel
        vel_s[t] = vel_f[t] + c10 * d_pos + c11 * d_vel
    out = pos_s
    if first > 0:  # before the first observation: run the smoothed state backwards
        out[:first] = pos_s[first][None] - np.arange(first, 0, -1)[:, None] * vel_s[first][None]
    return out


def rts_smooth(values: np.ndarray, observed: np.ndarray, *, measurement_std: float, accel_std: float,
               adaptive: bool = True) -> np.ndarray:
    """Forward-backward (RTS) smoothing of (T, D) series under a constant-velocity model.

    values: (T, D) samples one time step apart (rows where ``observed`` is False are ignored and filled).
    observed: (T,) bool. measurement_std, accel_std: in the units of ``values`` (per step, per step^2).
    Returns (T, D) float64. Rows before the first or after the last observation are extrapolated at
    constant velocity. All D columns share the model, so the covariances are computed once.
    adaptive: a second pass where the first one's residuals show a sudden change of motion (their local
    power far above the series' median), with a larger acceleration allowance on those frames only, so a
    face that starts or stops abruptly is not rounded off while jitter elsewhere stays smoothed.
    """
    z = np.asarray(values, np.float64)
    obs = np.asarray(observed, bool)
    if z.ndim != 2 or obs.shape != (z.shape[0],):
        raise InputError(f"rts_smooth: values must be (T, D) with observed (T,), got {z.shape} and {obs.shape}")
    t_len = z.shape[0]
    if t_len == 0 or not obs.any():
        return z.copy()
    r = float(measurement_std) ** 2
    q = np.full(t_len, float(accel_std) ** 2)
    out = _rts(z, obs, r, q)
    if adaptive and obs.sum() > 4:
        # A sudden change of motion (a head starting to turn) shows as a run of same-signed residuals far
        # larger than the jitter elsewhere in the track: let the velocity change there and smooth again.
        res = np.where(obs[:, None], z - out, 0.0)
        win = np.convolve((res**2).mean(axis=1), np.ones(3) / 3.0, mode="same")
        base = float(np.median(win[obs]))
        kink = win > _KINK_FACTOR * max(base, 0.1 * r)
        if kink.any():
            spread = np.convolve(kink.astype(np.float64), np.ones(3), mode="same") > 0
            q = np.where(spread, q * _KINK_BOOST, q)
            out = _rts(z, obs, r, q)
    return out


def _pack(face: Face, with_mesh: bool) -> np.ndarray:
    parts = [face.landmarks.ravel(), np.asarray(face.box, np.float64)]
    if with_mesh and face.mesh is not None:
        parts.append(np.asarray(face.mesh, np.float64).ravel())
    return np.concatenate(parts)


def smooth_track(track: FaceTrack, frames: Sequence[int], params: SmoothParams = SmoothParams()) -> FaceTrack:
    """Smooth one track's landmarks, boxes (and meshes) over the listed ``frames`` of its shot.

    frames: the clip's listed frame numbers (sorted); the track's frames must be among them. Detected
    faces stay ``detected`` with smoothed positions; ``interpolated`` faces are treated as unobserved and
    replaced by the smoother's estimate; ``host`` faces are observations and are returned unchanged.
    """
    if not track.faces:
        return track
    pos = listed_positions(track, frames, "smooth")
    mine = sorted(track.faces, key=lambda n: pos[n])
    i0, i1 = pos[mine[0]], pos[mine[-1]]
    faces = [track.faces[n] for n in mine]
    observed_faces = [f for f in faces if f.source != "interpolated"]
    if not observed_faces:
        return track
    mesh_shapes = {None if f.mesh is None else np.shape(f.mesh) for f in faces}
    with_mesh = len(mesh_shapes) == 1 and None not in mesh_shapes
    size = float(np.median([f.size for f in observed_faces]))
    width = _pack(faces[0], with_mesh).size
    z = np.zeros((i1 - i0 + 1, width))
    obs = np.zeros(i1 - i0 + 1, bool)
    for n, f in zip(mine, faces, strict=True):
        k = pos[n] - i0
        z[k] = _pack(f, with_mesh)
        obs[k] = f.source != "interpolated"
    sm = rts_smooth(z, obs, measurement_std=params.measurement_std * size, accel_std=params.accel_std * size)
    out: dict[int, Face] = {}
    for n, f in zip(mine, faces, strict=True):
        if f.source == "host":
            out[n] = replace(f, track_id=track.id)
            continue
        v = sm[pos[n] - i0]
        mesh = f.mesh
        if with_mesh and f.mesh is not None:
            mesh = v[14:].reshape(np.shape(f.mesh))
        box = v[10:14]
        if box[2] <= box[0] or box[3] <= box[1]:
            box = np.asarray(f.box, np.float64)  # never let smoothing invert a box
        out[n] = Face(box=tuple(box), landmarks=v[:10].reshape(5, 2), score=f.score, track_id=track.id,  # type: ignore[arg-type]
                      source=f.source, mesh=mesh)
    return FaceTrack(id=track.id, faces=out)
