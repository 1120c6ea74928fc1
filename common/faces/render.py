"""Ray-cast face renderer: ``render(identity, nuisance, size, modality)`` -> :class:`Render`.

Orthographic rays through the pixel centres hit ellipsoids in the head frame (head, nose bridge,
tip and wings, ears, neck, long-hair volume, eyewear temples) and the lens plane, so occlusion,
self-occlusion and profile silhouettes are exact. Face features (eyes, brows, lips, beard, hair)
are painted in front coordinates (X = x / head_w, Y = y) on the head. Landmarks are 3-D points
on those surfaces, projected like the pixels; a landmark is visible when the first surface on its
own ray is itself (depth test), it faces the camera by more than ``FACING`` and no lens that is
opaque in this modality is in front. Pixels: x right, y down, pixel centres at +0.5.

The thermal modality shades the same geometry with a temperature map (deg C), an emissivity
fall-off at grazing angles, optics blur, sensor noise and a fixed 18-38 deg C -> 0-255 grey map;
it never reads a colour, so skin tone and hair colour are invisible in it (as in LWIR). All
constants are RECONSTRUCTED (README table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.faces.world import IRIS_RGB, Identity, Nuisance

PARTS = ("background", "skin", "hair", "brow", "eye", "nose", "mouth", "beard", "eyewear")
BG, SKIN, HAIR, BROW, EYE, NOSE, MOUTH, BEARD, EYEWEAR = range(9)
# "l_" = image-left at yaw 0 (the subject's right), as in the MTCNN / CelebA 5-point order
LANDMARKS = ("l_brow_out", "l_brow_mid", "l_brow_in", "r_brow_in", "r_brow_mid", "r_brow_out",
             "l_eye_out", "l_eye_top", "l_eye_in", "l_eye_bot", "l_eye", "r_eye_in", "r_eye_top", "r_eye_out",
             "r_eye_bot", "r_eye", "nasion", "nose_tip", "l_nose_wing", "r_nose_wing",
             "l_mouth", "mouth_top", "r_mouth", "mouth_bot", "chin", "l_ear", "r_ear")
_SWAP = {"l_": "r_", "r_": "l_"}
FLIP = np.array([LANDMARKS.index(_SWAP[n[:2]] + n[2:]) if n[:2] in _SWAP else i for i, n in enumerate(LANDMARKS)])
FIVE = np.array([LANDMARKS.index(n) for n in ("l_eye", "r_eye", "nose_tip", "l_mouth", "r_mouth")])
LANDMARK_PART = np.array([BROW] * 6 + [EYE] * 10 + [NOSE] * 4 + [MOUTH] * 4 + [SKIN] * 3)
HEAD, NECK, EAR_L, EAR_R, BRIDGE, TIP, ALA_L, ALA_R, HAIRVOL, TEMPLE_L, TEMPLE_R, FRAME = range(1, 13)
PRIM_PART = np.array([BG, SKIN, SKIN, SKIN, SKIN, NOSE, NOSE, NOSE, NOSE, HAIR, EYEWEAR, EYEWEAR, EYEWEAR], np.uint8)
FACING = 0.1          # RECONSTRUCTED: min cos(normal, view) of a visible landmark
LENS_GAP, WRAP = 0.1, np.radians(20)  # RECONSTRUCTED: lens plane in front of the eyes; frame wrap angle
T_RANGE = (19.0, 37.0)  # RECONSTRUCTED: fixed thermal grey map (deg C at 0 and 255)
PX_PER_UNIT = 0.27    # RECONSTRUCTED: head half-height in image widths at scale 1
GAMMA = 1 / 1.5        # RECONSTRUCTED: camera response applied to the shaded face (linear albedo -> display)


@dataclass
class Render:
    image: np.ndarray       # (H, W, 3) uint8 visible | (H, W) uint8 thermal
    landmarks: np.ndarray   # (K, 2) float32 pixels, LANDMARKS order
    visible: np.ndarray     # (K,) bool
    parts: np.ndarray       # (H, W) uint8, PARTS indices
    box: np.ndarray         # (4,) float32 x0, y0, x1, y1: head, ears and nose pixels
    temperature: np.ndarray | None = None  # thermal: (H, W) float32 deg C before the grey map


def _rot(yaw, pitch, roll):
    (sy, sp, sr), (cy, cp, cr) = np.sin(np.radians([yaw, pitch, roll])), np.cos(np.radians([yaw, pitch, roll]))
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ ry @ np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])


def _mul(p, m):
    """Rows of ``p`` (N, 3) times ``m`` (3, 3), element-wise (no BLAS) so that every pixel is
    computed alike and the renderer is exactly mirror-symmetric."""
    return p[:, :1] * m[0] + p[:, 1:2] * m[1] + p[:, 2:] * m[2]


def _dot(p, v):
    return p[:, 0] * v[0] + p[:, 1] * v[1] + p[:, 2] * v[2]


_I3 = np.eye(3)


def _ellipsoid(c, e, q=None):
    return np.asarray(c, float), np.asarray(e, float), _I3 if q is None else q


def _primitives(idn: Identity, act: dict, rot: np.ndarray, eyewear: str, features: bool):
    # RECONSTRUCTED: part sizes and placements (head units), tuned by eye and by MTCNN's detection rate
    a, c = idn.head_w, idn.head_d
    zf = lambda x, y: c * np.sqrt(max(1 - (x / a) ** 2 - y**2, 0.0))
    prims = {HEAD: _ellipsoid((0, 0, 0), (a, 1, c)),
             NECK: _ellipsoid(rot.T @ [0, -1.15, -0.3], (0.47, 0.8, 0.45), rot.T)}  # the neck does not turn
    if idn.hair_style == "long":
        prims[HAIRVOL] = _ellipsoid((0, -0.32, -0.3), (a * 1.12, 1.05, c * 0.86))
    if not features:
        return prims
    ye, yt = idn.eye_y - 0.03, idn.mouth_y * 0.56 * idn.nose_len   # nasion and tip heights
    r_tip, prot = 0.072 * idn.nose_w, 0.17 * idn.nose_prot
    top, tip = np.array([0, ye, zf(0, ye) - 0.02]), np.array([0, yt, zf(0, yt) + prot - r_tip])
    u = (top - tip) / np.linalg.norm(top - tip)
    prims[BRIDGE] = _ellipsoid((top + tip) / 2, (0.05 * idn.nose_w, np.linalg.norm(top - tip) / 2 + 0.02, 0.06),
                               np.stack([[1, 0, 0], u, np.cross([1, 0, 0], u)], 1))
    prims[TIP] = _ellipsoid(tip, (r_tip,) * 3)
    for k, s in ((ALA_L, -1), (ALA_R, 1)):
        x = s * 0.1 * idn.nose_w
        prims[k] = _ellipsoid((x, yt - 0.035, zf(x, yt - 0.035) - 0.015), (0.055 * idn.nose_w,) * 3)
    for k, s in ((EAR_L, -1), (EAR_R, 1)):
        prims[k] = _ellipsoid((s * a * 0.96, idn.eye_y - 0.07, -0.04), np.array([0.075, 0.25, 0.16]) * idn.ear_size)
    if eyewear != "none":
        ex, ey, zl = _lens_frame(idn)
        for k, s in ((TEMPLE_L, -1), (TEMPLE_R, 1)):  # from the frame's outer edge back to the ear
            p0 = np.array([s * (ex + 0.24 * np.cos(WRAP)), ey + 0.04, zl - 0.24 * np.sin(WRAP)])
            p1 = np.array([s * (a + 0.05), ey + 0.04, -0.1])
            w = (p1 - p0) / np.linalg.norm(p1 - p0)
            prims[k] = _ellipsoid((p0 + p1) / 2, (0.018, 0.018, np.linalg.norm(p1 - p0) / 2),
                                  np.stack([[w[2], 0, -w[0]], [0, 1, 0], w], 1))
    return prims


def _hit(o, d, prim):
    """Entry distance along the rays o + t d (N, 3) into one ellipsoid (inf where missed)."""
    c, e, q = prim
    p, v = (o - c if q is _I3 else _mul(o - c, q)) / e, (d @ q) / e
    aa, b = (v * v).sum(), _dot(p, v)
    disc = b * b - aa * ((p * p).sum(1) - 1)
    return np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / aa, np.inf)


def _lens_frame(idn: Identity):
    """Lens centres (+-ex, ey, zl): LENS_GAP in front of the eyes."""
    ex, ey = idn.eye_sep * idn.head_w, idn.eye_y
    return ex, ey, idn.head_d * np.sqrt(max(1 - idn.eye_sep**2 - ey**2, 0)) + LENS_GAP


def _lens(o, d, idn: Identity, eyewear: str):
    """Rays against the two lens planes (wrapped by WRAP): (t, 1 lens / 2 frame / 0 miss)."""
    best, kind = np.full(len(o), np.inf), np.zeros(len(o), np.int8)
    if eyewear == "none":
        return best, kind
    ex, ey, zl = _lens_frame(idn)
    for s in (-1, 1):
        n, e = np.array([s * np.sin(WRAP), 0, np.cos(WRAP)]), np.array([s * np.cos(WRAP), 0, -np.sin(WRAP)])
        c, dn = np.array([s * ex, ey, zl]), float(d @ n)
        if abs(dn) < 1e-6:
            continue
        t = _dot(c - o, n) / dn
        h = o + t[:, None] * d
        u, v = _dot(h - c, e), h[:, 1] - ey
        r = (u / 0.2) ** 2 + (v / 0.15) ** 2
        bar = (u < 0) & (u > -ex / np.cos(WRAP)) & (np.abs(v - 0.06) < 0.02)
        k = np.where(r < 1, 1, np.where((r < 1.44) | bar, 2, 0))
        closer = (k > 0) & (t < best)
        best, kind = np.where(closer, t, best), np.where(closer, k, kind).astype(np.int8)
    return best, kind


class _Scene:
    """The geometry of one (identity, nuisance, size): rays, hits and landmarks."""

    def __init__(self, idn: Identity, nu: Nuisance, size: int, features: bool = True):
        self.idn, self.nu, self.size, self.act = idn, nu, size, nu.actions()
        self.rot = _rot(nu.yaw, nu.pitch, nu.roll)
        self.prims = _primitives(idn, self.act, self.rot, nu.eyewear if features else "none", features)
        self.s = size * PX_PER_UNIT * nu.scale
        self.ox, self.oy = nu.offset[0] * size, nu.offset[1] * size - 0.22 * self.s  # head centre from the middle
        self.d = -self.rot[2]  # camera ray direction (0, 0, -1) in the head frame
        g = np.arange(size) + 0.5 - size / 2
        xc, yc = np.meshgrid((g - self.ox) / self.s, (-g + self.oy) / self.s)
        o = self._origins(xc.ravel(), yc.ravel())
        self.t, self.pid, self.lens = self.cast(o, {k: self._footprint(p) for k, p in self.prims.items()})
        self.p = o + np.where(self.pid > 0, self.t, 0)[:, None] * self.d
        self.landmarks, self.lm_t, self.lm_facing = self._landmarks()

    def _origins(self, xc, yc):
        return _mul(np.stack([xc, yc, np.full_like(xc, 5.0)], 1), self.rot)  # R^T applied to each row

    def _footprint(self, prim):
        """Flat indices of the pixels whose rays can hit an ellipsoid (its image bounding box + 1 px)."""
        c, e, q = prim
        cc, half = self.rot @ c, np.linalg.norm((self.rot @ q * e)[:2], axis=1)
        cols = np.arange(self.size)[np.abs(np.arange(self.size) + 0.5 - self.size / 2 - self.ox - cc[0] * self.s)
                                    <= half[0] * self.s + 1]
        rows = np.arange(self.size)[np.abs(np.arange(self.size) + 0.5 - self.size / 2 - self.oy + cc[1] * self.s)
                                    <= half[1] * self.s + 1]
        return (rows[:, None] * self.size + cols[None, :]).ravel()

    def cast(self, o, footprints=None):
        """Nearest hit along each ray from origins ``o`` (head frame): (t, primitive id, t of a lens in front)."""
        best, pid = np.full(len(o), np.inf), np.zeros(len(o), np.int8)
        for k, prim in self.prims.items():
            idx = slice(None) if footprints is None else footprints[k]
            t, cur = _hit(o[idx], self.d, prim), best[idx]
            closer = t < cur
            best[idx], pid[idx] = np.where(closer, t, cur), np.where(closer, k, pid[idx])
        tl, kind = _lens(o, self.d, self.idn, self.nu.eyewear if BRIDGE in self.prims else "none")
        front = tl < best
        best, pid = np.where(front & (kind == 2), tl, best), np.where(front & (kind == 2), FRAME, pid).astype(np.int8)
        return best, pid, np.where(front & (kind == 1), tl, np.inf)

    def normals(self, p, pid):
        n = np.zeros_like(p)
        for k, (c, e, q) in self.prims.items():
            m = pid == k
            if m.any():
                n[m] = (p[m] - c) / e**2 if q is _I3 else _mul(_mul(p[m] - c, q) / e**2, q.T)
        n[pid == FRAME] = (0, 0, 1)
        return _mul(n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12), self.rot.T)  # camera frame

    def _landmarks(self):
        idn, act = self.idn, self.act
        self.lm_lens = np.zeros(len(LANDMARKS), bool)
        if BRIDGE not in self.prims:
            return np.zeros((len(LANDMARKS), 2)), np.zeros(len(LANDMARKS)), np.zeros(len(LANDMARKS), bool)
        f = _features_geometry(idn, act)
        pts = []
        for s in (-1, 1):  # image-left brow, then right (inner first on the right)
            vs = (1, 0, -1) if s < 0 else (-1, 0, 1)
            pts += [(HEAD, s * f["brow_x"](v), f["brow_y"](v, s)) for v in vs]
        for s in (-1, 1):
            ex, ey, w = s * idn.eye_sep, f["eye_y"](s), idn.eye_w
            corners = [(ex + s * w, ey), (ex, ey + f["eye_up"]), (ex - s * w, ey), (ex, ey - f["eye_lo"])]
            if s > 0:
                corners = [corners[2], corners[1], corners[0], corners[3]]
            pts += [(HEAD, x, y) for x, y in corners] + [(HEAD, ex, ey)]
        pts += [(BRIDGE, 0, 1.0), (TIP, 0, 0), (ALA_L, -0.8, 0), (ALA_R, 0.8, 0)]
        m = f["mouth"]
        pts += [(HEAD, -m["w"], m["ym"] + m["k"]), (HEAD, 0, m["top"]), (HEAD, m["w"], m["ym"] + m["k"]),
                (HEAD, 0, m["bot"]), (HEAD, 0, -0.9), (EAR_L, -0.7, 0), (EAR_R, 0.7, 0)]
        p, n = [], []
        for k, x, y in pts:
            c, e, q = self.prims[k]
            if k == HEAD:  # front coordinates on the head
                u = np.array([x, y, np.sqrt(max(1 - x * x - y * y, 0))])
            elif k == BRIDGE:  # along the bridge axis, on its front
                u = np.array([0, y * 0.85, np.sqrt(1 - 0.85**2)])
            else:  # direction on a sphere-like part: (x, *, front)
                u = np.array([x, 0, np.sqrt(1 - x * x)])
            p.append(c + q @ (e * u))
            n.append(q @ (u / e))
        p, n = np.array(p), np.array(n)
        cam = _mul(p, self.rot.T)
        nc = _mul(n / np.linalg.norm(n, axis=1, keepdims=True), self.rot.T)
        xy = np.stack([cam[:, 0] * self.s + self.ox + self.size / 2, self.size / 2 - cam[:, 1] * self.s + self.oy], 1)
        t_self = 5.0 - cam[:, 2]
        t_hit, _, t_lens = self.cast(self._origins(cam[:, 0], cam[:, 1]))
        visible = (t_hit >= t_self - 1e-6) & (nc[:, 2] > FACING)
        self.lm_lens = t_lens < t_self  # behind a lens (occludes where the lens is opaque)
        return xy, t_self, visible


def _features_geometry(idn: Identity, act: dict) -> dict:
    """Expression-dependent feature curves in front coordinates, shared by painting and landmarks."""
    open_ = 1 + act["eye_open"]
    w = idn.mouth_w * (1 + act["width"])
    lt, o, lr = idn.lip_thick * (0.7 if act["brow_tilt"] < -0.03 else 1), act["open"], act["lip_raise"]
    bl = idn.eye_w * 1.35
    return {
        "eye_y": lambda s: idn.eye_y + 0.015 * idn.asym * s,
        "eye_up": idn.eye_h * open_ * 1.15, "eye_lo": idn.eye_h * open_ * 0.85,
        "brow_x": lambda v: idn.eye_sep - 0.02 + v * bl,
        "brow_y": lambda v, s: (idn.eye_y + 0.015 * idn.asym * s + idn.brow_y + act["brow_raise"]
                                + idn.brow_arch * (1 - v * v) - act["brow_tilt"] * v),
        "brow_len": bl,
        "mouth": {"w": w, "ym": idn.mouth_y, "k": act["curve"], "up": lr + 0.3 * o, "lo": 0.7 * o, "lt": lt,
                  "top": idn.mouth_y + lr + 0.3 * o + 0.85 * lt, "bot": idn.mouth_y - 0.7 * o - 1.1 * lt},
    }


def _paint(sc: _Scene, m: np.ndarray) -> dict:
    """Feature masks and fields on the head pixels ``m`` (front coordinates X, Y, Z)."""
    # RECONSTRUCTED: feature shapes (almond eyes, arched brows, lips, hairline, beard, orbit shadow, fold)
    idn, act = sc.idn, sc.act
    p = sc.p[m]
    X, Y, Z = p[:, 0] / idn.head_w, p[:, 1], p[:, 2] / idn.head_d
    AX, s = np.abs(X), np.sign(X)
    f, front = _features_geometry(idn, act), Z > 0
    out = {"X": X, "Y": Y, "Z": Z}
    # hair: front hairline blended into the sides (sideburns) and the nape
    hf = idn.hairline + (0.1 + 0.5 * (idn.hair_style == "receding")) * X**2 + 0.06 * idn.asym * X + (
        0.25 if idn.hair_style == "receding" else 0)
    wf = np.clip(Z / 0.5, 0, 1)
    hb = np.where(Z > 0, wf * hf + (1 - wf) * -0.05, -0.05 + 0.4 * Z)
    hair = Y > hb
    if BRIDGE not in sc.prims:
        out.update(hair=hair, eye=np.zeros_like(hair))
        return out
    ey = f["eye_y"](s)
    u = (AX - idn.eye_sep) / idn.eye_w
    ins = np.clip(1 - u * u, 0, None)
    eye = front & (np.abs(u) < 1) & (Y < ey + f["eye_up"] * ins) & (Y > ey - f["eye_lo"] * ins)
    r = np.hypot((AX - idn.eye_sep) * idn.head_w, Y - ey)
    v = (AX - idn.eye_sep + 0.02) / f["brow_len"]
    brow = front & (np.abs(v) < 1) & (np.abs(Y - f["brow_y"](v, s)) < idn.brow_thick * (1 - 0.6 * v * v))
    mo = f["mouth"]
    u = X / mo["w"]
    ins, line = np.clip(1 - u * u, 0, None), mo["ym"] + mo["k"] * u * u
    inside = front & (np.abs(u) < 1) & (Y < line + mo["up"] * ins) & (Y > line - mo["lo"] * ins)
    lt = mo["lt"] * np.sqrt(np.clip(ins, 0.3, None))  # lips taper to rounded corners just past u = 1
    lips = front & (np.abs(u) < 1.05) & ~inside & (Y < line + mo["up"] * ins + 0.85 * lt) & (
        Y > line - mo["lo"] * ins - 1.1 * lt)
    beard = np.zeros_like(eye)
    if idn.beard != "none":
        full = idn.beard == "full"
        top = mo["ym"] + 0.11 + (0.3 * np.clip((AX - mo["w"]) / 0.5, 0, 1) if full else 0)
        beard = (Z > 0.15) & (AX < (0.95 if full else mo["w"] + 0.05)) & (Y < top) & ~hair
    socket = np.exp(-(((AX - idn.eye_sep) / 0.22) ** 2 + ((Y - ey - 0.05) / 0.1) ** 2))  # orbit shadow
    ya = -0.33  # nasolabial fold from the nose wing to past the mouth corner, deeper when smiling
    fold_x = 0.2 + (Y - ya) / (mo["ym"] - 0.02 - ya) * (mo["w"] + 0.05 - 0.2)
    fold = (0.12 + 1.5 * max(act["curve"], 0)) * np.exp(-(((AX - fold_x) / 0.025) ** 2)) * (
        (Y < ya) & (Y > mo["ym"] - 0.03) & front)
    canthus = np.exp(-(((AX - idn.eye_sep + idn.eye_w) * idn.head_w) ** 2 + (Y - ey) ** 2) / 0.045**2)
    out.update(hair=hair, eye=eye, iris=eye & (r < 0.5 * idn.eye_w * idn.head_w), pupil=r < 0.2 * idn.eye_w * idn.head_w,
               lash=eye & (Y > ey + f["eye_up"] * np.clip(1 - ((AX - idn.eye_sep) / idn.eye_w) ** 2, 0, 1) - 0.022),
               brow=brow, lips=lips, inside=inside, teeth=inside & (Y > line + mo["up"] * ins - 0.45 * mo["lo"] * ins),
               beard=beard & ~lips & ~inside, socket=socket * front, fold=fold, canthus=canthus * front)
    return out


def _parts(sc: _Scene, f: dict, m: np.ndarray) -> np.ndarray:
    parts = PRIM_PART[sc.pid]
    head = np.full(m.sum(), SKIN, np.uint8)
    for key, k in (("beard", BEARD), ("hair", HAIR), ("brow", BROW), ("eye", EYE), ("lips", MOUTH), ("inside", MOUTH)):
        if key in f:
            head[f[key]] = k
    parts[m] = head
    parts[np.isfinite(sc.lens)] = EYEWEAR
    return parts.reshape(sc.size, sc.size)


def _gauss1d(sigma):
    r = max(1, int(np.ceil(3 * sigma)))
    w = np.exp(-0.5 * (np.arange(r + 1) / sigma) ** 2)
    return w / (w[0] + 2 * w[1:].sum())


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (edge padding); mirror-exact (each tap pair is summed first)."""
    if sigma <= 0:
        return img
    w = _gauss1d(sigma)
    r = len(w) - 1
    for axis in (0, 1):
        pad = [(r, r) if a == axis else (0, 0) for a in range(img.ndim)]
        x, n = np.pad(img, pad, mode="edge"), img.shape[axis]
        sl = lambda k, x=x, n=n, axis=axis: x[(slice(None),) * axis + (slice(r + k, r + k + n),)]  # a view
        img = w[0] * sl(0) + sum(w[k] * (sl(k) + sl(-k)) for k in range(1, r + 1))
    return img


def _resample(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix with a triangle filter widened when shrinking."""
    src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    width = max(1.0, n_in / n_out)
    w = np.clip(1 - np.abs(src[:, None] - np.arange(n_in)[None]) / width, 0, None)
    return w / w.sum(1, keepdims=True)


def clutter(rng: np.random.Generator, size: int, n: int = 14) -> np.ndarray:
    """Procedural clutter (H, W, 3) in [0, 1]: a smooth base, ellipses, bars and stripes (RECONSTRUCTED)."""
    g = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(g, g, indexing="ij")
    img = rng.uniform(0.2, 0.8, 3) * (0.7 + 0.3 * np.sin(rng.uniform(2, 9) * xx + rng.uniform(2, 9) * yy))[..., None]
    for _ in range(n):
        cx, cy, rx, ry = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.3), rng.uniform(0.03, 0.3)
        kind = rng.integers(3)
        if kind == 0:
            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        elif kind == 1:
            mask = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry * 0.3)
        else:
            mask = (np.sin((xx * np.cos(cx * 6) + yy * np.sin(cx * 6)) * rng.uniform(20, 60)) > 0.6) & (
                np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
        img[mask] = rng.uniform(0, 1, 3) * rng.uniform(0.5, 1.0)
    return blur(img, 0.4 * size / 64)


def _background(nu: Nuisance, size: int, rng) -> np.ndarray:
    if nu.background == "clutter":
        bg = clutter(rng, size)
    else:
        bg = np.broadcast_to(np.array(nu.bg_rgb, float), (size, size, 3)).copy()
        if nu.background == "gradient":
            ang, g = rng.uniform(0, 2 * np.pi), (np.arange(size) + 0.5) / size - 0.5
            ramp = np.cos(ang) * g[None, :] + np.sin(ang) * g[:, None]
            bg = bg * (0.7 + 0.6 * ramp[..., None])
    return bg[:, ::-1] if nu.flip else bg


def _shade_visible(sc: _Scene, f, m, bg):
    # RECONSTRUCTED: Lambert + weak specular shading, albedos and darkening amounts
    idn, nu = sc.idn, sc.nu
    skin, hair_rgb = idn.skin_rgb, idn.hair_rgb
    alb = np.tile(skin, (sc.size * sc.size, 1))
    pid = sc.pid
    alb[(pid == EAR_L) | (pid == EAR_R)] *= (1.02, 0.92, 0.9)
    alb[pid == HAIRVOL] = hair_rgb
    alb[pid >= TEMPLE_L] = (0.08, 0.07, 0.07)
    h = np.tile(skin, (m.sum(), 1))
    if "socket" in f:
        h *= (1 - 0.35 * f["socket"] - f["fold"])[:, None]
        h[f["beard"]] = 0.35 * h[f["beard"]] + 0.65 * hair_rgb
        h[f["lips"]] = skin * (0.72, 0.42, 0.42) + (0.06, 0.0, 0.0)
        h[f["inside"]] = (0.2, 0.05, 0.06)
        h[f["teeth"]] = (0.86, 0.84, 0.78)
        h[f["brow"]] = hair_rgb * 0.5 + 0.02  # brows are darker than the hair
        h[f["eye"]] = (0.86, 0.84, 0.82)
        h[f["iris"]] = IRIS_RGB[idn.iris]
        h[f["eye"] & f["pupil"]] = (0.03, 0.03, 0.03)
        h[f["lash"]] = (0.05, 0.04, 0.04)
    strands = 0.85 + 0.15 * np.cos(70 * np.arctan2(sc.p[m][:, 0], sc.p[m][:, 2]))
    h[f["hair"]] = hair_rgb * strands[f["hair"], None]
    alb[m] = h
    nose = (pid >= TIP) & (pid <= ALA_R)
    n_head = sc.normals(sc.p, pid)
    # nostrils: the downward-facing underside of the tip and wings
    if nose.any():
        down = _mul(n_head[nose], sc.rot)[:, 1] < -0.55  # head-frame normal points down
        alb[np.flatnonzero(nose)[down & (np.abs(sc.p[nose, 0]) > 0.03)]] *= 0.25
    az, el = np.radians(nu.light_az), np.radians(nu.light_el)
    light = np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
    lam = np.clip(_dot(n_head, light), 0, None)
    spec = 0.12 * np.clip(_dot(n_head, (light + (0, 0, 1)) / np.linalg.norm(light + (0, 0, 1))), 0, None) ** 24
    col = alb * (nu.ambient + (1 - nu.ambient) * lam)[:, None] + spec[:, None]
    img = np.where((pid == 0)[:, None], bg.reshape(-1, 3), np.clip(col, 0, None) ** GAMMA)
    lens = np.isfinite(sc.lens)  # sunglasses: dark; clear lenses: a slight veil (over the face or the background)
    img[lens] = (0.1, 0.1, 0.12) if nu.eyewear == "sunglasses" else 0.8 * img[lens] + 0.12
    return img.reshape(sc.size, sc.size, 3)


def _shade_thermal(sc: _Scene, f, m, bg_t):
    idn, nu = sc.idn, sc.nu
    # RECONSTRUCTED: temperatures (deg C) after the LWIR face literature's qualitative picture: warm inner
    # canthi and forehead, cold nose tip, ears and cheek sides, cool hair, warm open mouth, lenses near ambient
    ta, pid = nu.t_ambient, sc.pid
    t = np.full(sc.size * sc.size, 34.0 + idn.t_skin)
    for k, v in ((NECK, 33.6), (EAR_L, 31.0), (EAR_R, 31.0), (BRIDGE, 33.0), (ALA_L, 32.6), (ALA_R, 32.6),
                 (TIP, 34.0 + idn.t_nose), (HAIRVOL, 27.0), (TEMPLE_L, ta + 6), (TEMPLE_R, ta + 6), (FRAME, ta + 6)):
        t[pid == k] = v + (idn.t_skin if v > 30 else 0)
    h = t[m] + 0.6 * np.clip((f["Y"] - 0.2) / 0.3, 0, 1) - 2.0 * (1 - np.clip(f["Z"] / 0.7, 0, 1))
    if "socket" in f:
        h += 1.5 * f["canthus"]
        h[f["eye"]] = 33.9 + idn.t_skin
        h[f["brow"]] -= 1.0
        h[f["lips"]] += 0.5
        h[f["inside"]] = 35.8
        h[f["beard"]] -= 2.5
    h[f["hair"]] = 29.0
    t[m] = h
    cos = np.clip(sc.normals(sc.p, pid)[:, 2], 0, 1)
    t = np.where(pid == 0, bg_t.ravel(), ta + (t - ta) * (1 - 0.3 * (1 - cos) ** 2))  # emissivity at grazing angles
    t[np.isfinite(sc.lens)] = ta + 3.0  # glass is opaque to LWIR: the lens's own temperature
    return t.reshape(sc.size, sc.size)


def _box(sc: _Scene) -> np.ndarray:
    ys, xs = np.nonzero(((sc.pid > 0) & (sc.pid < HAIRVOL) & (sc.pid != NECK)).reshape(sc.size, sc.size))
    if len(xs) == 0:
        return np.zeros(4, np.float32)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def render(identity: Identity, nuisance: Nuisance, size: int = 64, modality: str = "visible", *,
           features: bool = True, background: np.ndarray | None = None) -> Render:
    """Render one face. ``modality``: "visible" (RGB) or "thermal" (grey, plus ``temperature``).
    ``features=False`` gives a featureless head (a hard negative). ``background``: an (H, W, 3)
    image in [0, 1] (visible) or (H, W) temperatures (thermal) to use instead of the nuisance's."""
    if modality not in ("visible", "thermal"):
        raise ValueError(f"modality={modality!r}; expected 'visible' or 'thermal'")
    sc, nu = _Scene(identity, nuisance, size, features), nuisance
    m = sc.pid == HEAD
    f = _paint(sc, m)
    rng = np.random.default_rng([nu.seed, 7])
    flip = (lambda a: a[:, ::-1]) if nu.flip else (lambda a: a)
    bg = _background(nu, size, rng) if background is None else background
    lm_vis = sc.lm_facing & ~(sc.lm_lens & (modality == "thermal" or nu.eyewear == "sunglasses"))
    if modality == "visible":
        img = blur(_shade_visible(sc, f, m, bg), nu.blur)
        img = img + nu.noise * flip(rng.standard_normal((size, size, 3)))
        out, temp = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), None
    else:
        bg_t = bg if background is not None else nu.t_ambient + (
            4 * bg.mean(-1) - 2 if nu.background != "flat" else np.zeros((size, size)))
        temp = blur(_shade_thermal(sc, f, m, bg_t), nu.t_blur)  # optics, then the sensor's pixels and noise
        n = nu.t_native if 0 < nu.t_native < size else size
        noise = nu.t_noise * flip(rng.standard_normal((n, n)) + 0.5 * rng.standard_normal(n)[None, :])
        if n < size:
            down, up = _resample(size, n), _resample(n, size)
            temp = up @ (down @ temp @ down.T + noise) @ up.T
        else:
            temp = temp + noise
        lo, hi = T_RANGE
        out = np.round(np.clip((temp - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
        temp = temp.astype(np.float32)
    return Render(out, sc.landmarks.astype(np.float32), lm_vis, _parts(sc, f, m), _box(sc), temp)
