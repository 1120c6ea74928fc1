"""Who is in the picture (:class:`Identity`, a pure function of (seed, id)) and how it is seen
(:class:`Nuisance`: pose, expression, eyewear, light, background, camera). Lengths are in head
units (half the head height is 1); face features live in front coordinates X = x / head_w,
Y = y (the head-frame point seen straight on); angles in degrees. Every choice of range and
shape is # RECONSTRUCTED: (listed in common/faces/README.md); none comes from a paper."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

# RAF-DB basic-emotion order (label = index + 1: 1 surprise ... 7 neutral); general knowledge, confirm.
EXPRESSIONS = ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral")
# RECONSTRUCTED: FACS-inspired action amounts at intensity 1 (mouth curve / open / width, brow
# raise / inner tilt, eye opening, nose wrinkle, upper-lip raise), tuned by eye on the preview.
EXPR_KEYS = ("curve", "open", "width", "brow_raise", "brow_tilt", "eye_open", "wrinkle", "lip_raise")
EXPR = {
    "neutral": (0, 0, 0, 0, 0, 0, 0, 0),
    "happy": (0.07, 0.03, 0.14, 0.0, 0.0, -0.35, 0.0, 0.0),
    "sad": (-0.05, 0.0, -0.06, 0.01, 0.06, -0.2, 0.0, 0.0),
    "surprise": (0.0, 0.15, -0.25, 0.08, 0.0, 0.5, 0.0, 0.0),
    "fear": (-0.02, 0.06, 0.18, 0.05, 0.05, 0.4, 0.0, 0.0),
    "disgust": (-0.03, 0.01, -0.06, -0.03, -0.02, -0.4, 1.0, 0.035),
    "anger": (-0.015, 0.0, -0.1, -0.05, -0.07, -0.25, 0.3, 0.0),
}
EYEWEAR = ("none", "clear", "sunglasses")
BACKGROUNDS = ("flat", "gradient", "clutter")
HAIR_STYLES = ("short", "long", "receding")
BEARDS = ("none", "goatee", "full")
# RECONSTRUCTED palettes (linear-ish RGB in [0, 1])
HAIR_RGB = {"black": (0.06, 0.05, 0.05), "dark_brown": (0.22, 0.13, 0.08), "brown": (0.42, 0.27, 0.15),
            "blond": (0.80, 0.66, 0.40), "red": (0.58, 0.25, 0.10), "grey": (0.62, 0.61, 0.60)}
IRIS_RGB = ((0.30, 0.17, 0.08), (0.42, 0.32, 0.15), (0.25, 0.42, 0.62), (0.28, 0.45, 0.30), (0.45, 0.48, 0.50))
SKIN_LIGHT, SKIN_DARK = np.array([0.96, 0.80, 0.69]), np.array([0.33, 0.21, 0.15])

# RECONSTRUCTED: continuous identity parameters: (mean, population std, low, high). Identities are
# drawn from N(mean, std) clipped; per-image jitter adds sigma * std * N(0, 1) (same clip).
GEOMETRY = {
    "head_w": (0.76, 0.04, 0.66, 0.86),   # half-width (x); half-height is 1
    "head_d": (0.86, 0.04, 0.76, 0.96),   # half-depth (z)
    "eye_sep": (0.42, 0.025, 0.36, 0.48),  # eye centre |X|
    "eye_w": (0.17, 0.015, 0.13, 0.21),    # eye half-width (X)
    "eye_h": (0.05, 0.008, 0.035, 0.07),   # eye half-opening (Y)
    "eye_y": (0.02, 0.03, -0.05, 0.08),
    "brow_y": (0.17, 0.02, 0.12, 0.23),    # brow height above the eye line
    "brow_thick": (0.038, 0.008, 0.02, 0.06),
    "brow_arch": (0.03, 0.015, 0.0, 0.07),
    "nose_len": (1.0, 0.08, 0.8, 1.2),     # multipliers of the template nose
    "nose_w": (1.0, 0.1, 0.75, 1.3),
    "nose_prot": (1.0, 0.12, 0.7, 1.3),
    "mouth_w": (0.29, 0.025, 0.22, 0.36),  # mouth half-width (X)
    "mouth_y": (-0.52, 0.03, -0.6, -0.44),
    "lip_thick": (0.055, 0.008, 0.035, 0.075),
    "ear_size": (1.0, 0.1, 0.8, 1.2),
    "hairline": (0.42, 0.07, 0.25, 0.6),     # front hairline Y at X = 0
    "skin_tone": (0.5, 0.05, 0.0, 1.0),    # 0 light .. 1 dark (drawn uniformly; std is the jitter scale)
    "t_skin": (0.0, 0.4, -1.0, 1.0),       # thermal: skin temperature offset (deg C)
    "t_nose": (-2.5, 0.6, -4.0, -1.0),     # thermal: nose-tip cooling (deg C)
}


@dataclass(frozen=True)
class Identity:
    head_w: float
    head_d: float
    eye_sep: float
    eye_w: float
    eye_h: float
    eye_y: float
    brow_y: float
    brow_thick: float
    brow_arch: float
    nose_len: float
    nose_w: float
    nose_prot: float
    mouth_w: float
    mouth_y: float
    lip_thick: float
    ear_size: float
    hairline: float
    skin_tone: float
    t_skin: float
    t_nose: float
    hair_colour: str = "dark_brown"
    iris: int = 0
    hair_style: str = "short"
    beard: str = "none"
    asym: float = 0.0  # hair parting and eye-height asymmetry; 0 = mirror-symmetric face

    @classmethod
    def sample(cls, seed: int, id: int) -> Identity:
        """The identity ``id`` of world ``seed`` (a pure function of both)."""
        rng = np.random.default_rng([int(seed), int(id), 1])
        geo = {k: float(np.clip(m + s * rng.standard_normal(), lo, hi)) for k, (m, s, lo, hi) in GEOMETRY.items()}
        geo["skin_tone"] = float(rng.random())
        hair = str(rng.choice(list(HAIR_RGB), p=[0.3, 0.25, 0.15, 0.12, 0.08, 0.1]))
        style = str(rng.choice(HAIR_STYLES, p=[0.55, 0.3, 0.15]))
        beard = str(rng.choice(BEARDS, p=[0.7, 0.12, 0.18])) if style != "long" else "none"
        return cls(**geo, hair_colour=hair, iris=int(rng.integers(len(IRIS_RGB))), hair_style=style,
                   beard=beard, asym=float(rng.uniform(-1, 1)))

    def jitter(self, sigma: float, seed) -> Identity:
        """This identity in one image: continuous parameters + sigma * population std * N(0, 1)."""
        if sigma == 0:
            return self
        rng = np.random.default_rng(seed)
        return replace(self, **{k: float(np.clip(getattr(self, k) + sigma * s * rng.standard_normal(), lo, hi))
                                for k, (_, s, lo, hi) in GEOMETRY.items()})

    def symmetric(self) -> Identity:
        return replace(self, asym=0.0)

    @property
    def skin_rgb(self) -> np.ndarray:
        return (1 - self.skin_tone) * SKIN_LIGHT + self.skin_tone * SKIN_DARK

    @property
    def hair_rgb(self) -> np.ndarray:
        return np.array(HAIR_RGB[self.hair_colour])


@dataclass(frozen=True)
class Nuisance:
    # RECONSTRUCTED defaults (camera blur/noise, thermal optics, NETD-like noise)
    yaw: float = 0.0      # > 0 turns the face towards image-right
    pitch: float = 0.0    # > 0 looks up
    roll: float = 0.0     # > 0 rotates the face counter-clockwise in the image
    expression: str = "neutral"
    intensity: float = 1.0
    eyewear: str = "none"
    light_az: float = 20.0  # light direction: azimuth (deg, > 0 from image-right), elevation (deg)
    light_el: float = 30.0
    ambient: float = 0.45
    background: str = "flat"
    bg_rgb: tuple = (0.55, 0.58, 0.62)
    scale: float = 1.0      # face size multiplier
    offset: tuple = (0.0, 0.0)  # face shift, fraction of the image (x right, y down)
    blur: float = 0.6       # visible camera blur (Gaussian sigma, px at the output size)
    noise: float = 0.01     # visible sensor noise std (fraction of full scale)
    t_ambient: float = 20.0  # thermal: background / ambient temperature (deg C)
    t_blur: float = 0.9      # thermal optics blur (px)
    t_noise: float = 0.08    # thermal sensor noise (deg C, NETD-like) + half that as column pattern
    t_native: int = 0        # thermal sensor's native resolution (0 = the output size)
    seed: int = 0            # image-space randomness (background clutter, sensor noise)
    flip: bool = False       # image-space randomness mirrored; see mirrored()

    def __post_init__(self):
        for name, allowed in (("expression", EXPRESSIONS), ("eyewear", EYEWEAR), ("background", BACKGROUNDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Nuisance.{name}={getattr(self, name)!r}; expected one of {allowed}")

    def mirrored(self) -> Nuisance:
        """The mirror image: render(ident.symmetric(), nu.mirrored()) == render(...)[:, ::-1]."""
        return replace(self, yaw=-self.yaw, roll=-self.roll, light_az=-self.light_az,
                       offset=(-self.offset[0], self.offset[1]), flip=not self.flip)

    def actions(self) -> dict:
        """The expression's action amounts at this intensity."""
        return {k: v * self.intensity for k, v in zip(EXPR_KEYS, EXPR[self.expression])}


def sample_nuisance(rng: np.random.Generator, *, yaw=(-90.0, 90.0), pitch=(-20.0, 20.0), roll=(-12.0, 12.0),
                    expressions=EXPRESSIONS, intensity=(0.5, 1.0), eyewear_p=(0.7, 0.15, 0.15),
                    backgrounds=BACKGROUNDS, scale=(0.9, 1.1), shift=0.04, **fixed) -> Nuisance:
    """A random nuisance: (low, high) ranges are uniform (a number fixes the value), ``shift`` bounds
    the offset, ``eyewear_p`` weighs none/clear/sunglasses; ``fixed`` sets any Nuisance field outright."""
    # RECONSTRUCTED: the sampling ranges (pose, light, ambient, blur, ambient temperature, eyewear odds)
    u = lambda r: float(rng.uniform(*r)) if isinstance(r, tuple) else float(r)
    nu = dict(yaw=u(yaw), pitch=u(pitch), roll=u(roll), expression=str(rng.choice(expressions)),
              intensity=u(intensity), eyewear=str(rng.choice(EYEWEAR, p=eyewear_p)),
              light_az=u((-70.0, 70.0)), light_el=u((-10.0, 60.0)), ambient=u((0.3, 0.6)),
              background=str(rng.choice(backgrounds)), bg_rgb=tuple(float(c) for c in rng.uniform(0.1, 0.9, 3)),
              scale=u(scale), offset=(u((-shift, shift)), u((-shift, shift))), blur=u((0.2, 0.6)),
              t_ambient=u((18.0, 24.0)), seed=int(rng.integers(2**31)))
    names = {f.name for f in fields(Nuisance)}
    bad = set(fixed) - names
    if bad:
        raise TypeError(f"sample_nuisance: unknown Nuisance fields {sorted(bad)}")
    return Nuisance(**{**nu, **fixed})


ATTRIBUTES = ("eyeglasses", "sunglasses", "beard", "smiling", "mouth_open", "bald", "long_hair",
              "dark_hair", "blond_hair", "pale_skin", "bushy_brows", "big_nose", "narrow_eyes")


def attributes(ident: Identity, nu: Nuisance) -> np.ndarray:
    """CelebA-like binary attributes (ATTRIBUTES order) of one image. RECONSTRUCTED thresholds."""
    a = nu.actions()
    return np.array([nu.eyewear == "clear", nu.eyewear == "sunglasses", ident.beard != "none",
                     nu.expression == "happy" and nu.intensity >= 0.4, a["open"] + a["lip_raise"] > 0.03,
                     ident.hair_style == "receding", ident.hair_style == "long",
                     ident.hair_colour in ("black", "dark_brown"), ident.hair_colour == "blond",
                     ident.skin_tone < 0.25, ident.brow_thick > 0.046, ident.nose_len * ident.nose_w > 1.1,
                     ident.eye_h * (1 + a["eye_open"]) < 0.04], dtype=bool)
