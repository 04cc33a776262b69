"""Chest-radiograph phantom: a deterministic, vectorised numpy renderer.

Coordinates are normalised to [0, 1] (x to the right, y down) and evaluated on a square pixel grid,
so the same phantom can be drawn at any ``image_size``. Intensities are X-ray-like: bright = dense
(bone, heart, fluid), dark = air (lungs). The image is the patient's **frontal view as a
radiologist reads it**: the patient's RIGHT side is on the image LEFT.

Composition order (fixed, so that removing one finding changes only that finding's pixels):

1. anatomy: body outline, abdomen below the diaphragm domes, two lung fields with vascular
   markings, mediastinum with trachea, heart shadow. Cardiomegaly widens the heart ellipse and an
   enlarged cardiomediastinum widens the upper mediastinum (both modify the anatomy itself);
2. pleural replacements: pneumothorax (dark rim without lung markings plus a thin visceral pleural
   line at the apex/lateral side) and pleural effusion (homogeneous fluid with a meniscus at the
   base, height by severity);
3. parenchymal / pleural overlays, masked to the lung (attenuated to 45 % behind the heart and
   mediastinum, as retrocardiac opacities are): atelectasis (linear band), consolidation
   (dense irregular patch), edema (bilateral perihilar haze), lung lesion (round sharp nodule/mass),
   lung opacity (soft hazy patch), pleural other (lateral pleural thickening), pneumonia (patchy
   small blobs);
4. bones: spine with vertebral segments, clavicles and posterior ribs; a fracture cuts a gap with a
   step-off into two adjacent ribs;
5. support devices drawn on top (endotracheal tube, internal jugular line, pacemaker with leads,
   enteric tube);
6. per-image exposure: gain/offset, a smooth exposure field and Gaussian noise (all from the image's
   noise seed, hence identical in a counterfactual twin), clipping and 8-bit quantisation.

Every finding carries its own ``seed`` for its shape, so a twin rendered without finding F is the
same phantom with the same noise, differing only where F was drawn. Bounding boxes are measured
from exactly that difference (see :func:`finding_bbox`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from PIL import Image

#: The image side where the patient's right lies (PA/AP view).
SIDE_SIGN = {"right": -1.0, "left": 1.0}  # x offset sign of a patient side from the midline

SEVERITY_LEVEL = {"mild": 0, "small": 0, "moderate": 1, "severe": 2, "large": 2}


@dataclass(frozen=True)
class Finding:
    """One drawn finding: CheXpert name, location, severity and a shape seed.

    ``location``: ``right``/``left``/``bilateral`` optionally followed by ``upper``/``lower``
    (e.g. ``"right lower"``), or ``None`` (cardiomegaly, mediastinum, midline devices).
    ``severity``: mild/moderate/severe or small/moderate/large, or ``None`` (fracture, devices).
    ``device``: the device kind for Support Devices (ett, ij_line, pacemaker, enteric_tube).
    """

    condition: str
    location: str | None
    severity: str | None
    seed: int = 0
    device: str | None = None

    @property
    def slug(self) -> str:
        return self.condition.lower().replace(" ", "-")

    def sides(self) -> list[str]:
        if not self.location:
            return []
        side = self.location.split()[0]
        return ["right", "left"] if side == "bilateral" else [side]

    def zone(self) -> str | None:
        parts = (self.location or "").split()
        return parts[1] if len(parts) > 1 else None

    def level(self) -> int:
        return SEVERITY_LEVEL.get(self.severity or "moderate", 1)


@dataclass(frozen=True)
class Anatomy:
    """Per-patient geometry (jittered a little per study) and the view."""

    cx: float = 0.5            # body midline
    body_hw: float = 0.41      # thorax half-width
    lung_a: float = 0.145      # lung ellipse half-width
    lung_b: float = 0.33       # lung ellipse half-height
    lung_dx: float = 0.19      # lung centre distance from the midline
    lung_cy: float = 0.43
    dome_y: float = 0.70       # right hemidiaphragm apex (left is 0.02 lower)
    heart_hw: float = 0.14
    heart_hh: float = 0.12
    heart_cy: float = 0.60
    med_hw: float = 0.052      # upper mediastinum half-width
    rib_y0: float = 0.17
    rib_step: float = 0.063
    tissue: float = 0.40
    view: str = "PA"
    # per-image exposure
    gain: float = 1.0
    offset: float = 0.0
    noise_sigma: float = 0.025


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Per-patient geometry: a few percent of jitter around the default phantom."""

    def j(v: float, rel: float) -> float:
        return float(v * (1.0 + rng.uniform(-rel, rel)))

    return Anatomy(
        cx=0.5 + float(rng.uniform(-0.015, 0.015)),
        body_hw=j(0.41, 0.04),
        lung_a=j(0.145, 0.05),
        lung_b=j(0.33, 0.04),
        lung_dx=j(0.19, 0.03),
        lung_cy=0.43 + float(rng.uniform(-0.015, 0.015)),
        dome_y=0.70 + float(rng.uniform(-0.02, 0.02)),
        heart_hw=j(0.14, 0.06),
        heart_hh=j(0.12, 0.05),
        med_hw=j(0.052, 0.06),
        rib_y0=0.17 + float(rng.uniform(-0.01, 0.01)),
        rib_step=j(0.063, 0.04),
        tissue=j(0.40, 0.06),
    )


def jitter_study(anat: Anatomy, rng: np.random.Generator, view: str) -> Anatomy:
    """Small study-to-study variation (positioning, exposure) of one patient's anatomy."""
    return replace(
        anat,
        cx=anat.cx + float(rng.uniform(-0.008, 0.008)),
        lung_cy=anat.lung_cy + float(rng.uniform(-0.008, 0.008)),
        view=view,
        gain=float(rng.uniform(0.85, 1.12)),
        offset=float(rng.uniform(-0.05, 0.05)),
        noise_sigma=float(rng.uniform(0.018, 0.032)),
    )


# --------------------------------------------------------------------------------------------
# small vectorised helpers


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(c, c, indexing="ij")
    return x, y


def _edge(d: np.ndarray, px: float, width: float = 1.2) -> np.ndarray:
    """Anti-aliased inside-mask from a signed distance (negative inside), ``width`` in pixels."""
    return np.clip(0.5 - d / (width * px), 0.0, 1.0)


def _ellipse_d(x, y, cx, cy, a, b) -> np.ndarray:
    """Approximate signed distance to an ellipse boundary (negative inside)."""
    r = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
    return (r - 1.0) * min(a, b)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in [-1, 1]: a coarse random grid upsampled bicubically."""
    coarse = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC)
    return np.clip(np.asarray(img, dtype=np.float32), -1.0, 1.0)


def _polyline_d(x, y, pts: list[tuple[float, float]]) -> np.ndarray:
    """Distance to a polyline given as normalised points."""
    d = np.full(x.shape, np.inf, dtype=np.float32)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        vx, vy = x1 - x0, y1 - y0
        L2 = vx * vx + vy * vy or 1e-9
        t = np.clip(((x - x0) * vx + (y - y0) * vy) / L2, 0.0, 1.0)
        d = np.minimum(d, np.hypot(x - (x0 + t * vx), y - (y0 + t * vy)))
    return d


# --------------------------------------------------------------------------------------------
# rendering


@dataclass
class _Ctx:
    size: int
    x: np.ndarray
    y: np.ndarray
    px: float
    anat: Anatomy
    lungs: dict = field(default_factory=dict)  # side -> dict(cx, cy, a, b, raw, vis)
    lung_vis: np.ndarray | None = None

    def lung_center(self, side: str) -> tuple[float, float]:
        return self.lungs[side]["cx"], self.lungs[side]["cy"]

    def zone_center(self, side: str, zone: str | None) -> tuple[float, float]:
        L = self.lungs[side]
        lat = SIDE_SIGN[side]
        if zone == "upper":
            return L["cx"] + lat * 0.015, L["cy"] - 0.13
        return L["cx"] + lat * 0.04, L["cy"] + 0.11


def _by_condition(findings) -> dict[str, Finding]:
    return {f.condition: f for f in findings}


def render_frontal(anat: Anatomy, findings, size: int, noise_seed: int) -> np.ndarray:
    """Render a PA/AP phantom with ``findings``; returns float32 [size, size] in [0, 1]."""
    x, y = _grid(size)
    px = 1.0 / size
    a = anat
    F = _by_condition(findings)
    ctx = _Ctx(size=size, x=x, y=y, px=px, anat=a)
    nrng = np.random.default_rng(noise_seed)
    # all random fields of the anatomy/noise are drawn first, in a fixed order
    markings_tex = _smooth_noise(nrng, size, 14)
    tissue_tex = _smooth_noise(nrng, size, 5)
    exposure = _smooth_noise(nrng, size, 3)
    noise = nrng.standard_normal((size, size)).astype(np.float32)

    img = np.full((size, size), 0.03, dtype=np.float32)

    # body outline (thorax + neck + shoulders)
    body = np.maximum(
        _edge(_ellipse_d(x, y, a.cx, 0.60, a.body_hw, 0.60), px),
        _edge(np.abs(x - a.cx) - 0.085, px) * (y < 0.25),
    )
    body = np.maximum(body, _edge(_ellipse_d(x, y, a.cx, 0.22, a.body_hw * 1.12, 0.11), px))
    img = img * (1 - body) + (a.tissue + 0.04 * tissue_tex) * body

    # diaphragm domes: y of the dome surface per side
    def dome(side: str) -> np.ndarray:
        lx = a.cx + SIDE_SIGN[side] * a.lung_dx
        apex = a.dome_y + (0.02 if side == "left" else 0.0)
        return apex + 2.6 * (x - lx) ** 2

    below = np.minimum(_edge(dome("right") - y, px), 1.0) * (x < a.cx) + _edge(dome("left") - y, px) * (x >= a.cx)
    img = img * (1 - below * body) + 0.52 * below * body

    # lungs
    lung_raw_all = np.zeros_like(img)
    hilar = np.zeros_like(img)
    for side in ("right", "left"):
        lcx = a.cx + SIDE_SIGN[side] * a.lung_dx
        raw = np.minimum(_edge(_ellipse_d(x, y, lcx, a.lung_cy, a.lung_a, a.lung_b), px), _edge(y - dome(side), px))
        ctx.lungs[side] = {"cx": lcx, "cy": a.lung_cy, "a": a.lung_a, "b": a.lung_b, "raw": raw}
        lung_raw_all = np.maximum(lung_raw_all, raw)
        hx = a.cx + SIDE_SIGN[side] * 0.07
        hilar = np.maximum(hilar, np.exp(-(((x - hx) / 0.16) ** 2 + ((y - (a.lung_cy + 0.02)) / 0.2) ** 2)))
    vessels = np.clip(1.0 - np.abs(markings_tex) / 0.22, 0.0, 1.0)  # ridge lines of the texture
    lung_val = 0.12 + 0.10 * vessels * (0.3 + 0.7 * hilar)
    img = img * (1 - lung_raw_all) + lung_val * lung_raw_all

    # mediastinum (upper, widened by Enlarged Cardiomediastinum) and trachea
    med_hw = a.med_hw
    ecm = F.get("Enlarged Cardiomediastinum")
    if ecm is not None:
        med_hw = a.med_hw * (1.45, 1.75, 2.05)[ecm.level()]
    med = _edge(np.abs(x - a.cx) - med_hw, px) * _edge(0.10 - y, px) * _edge(y - (a.heart_cy + 0.02), px)
    img = img * (1 - med) + 0.60 * med
    trachea = _edge(np.abs(x - a.cx) - 0.017, px) * _edge(0.0 - y, px) * _edge(y - 0.33, px)
    img = img - 0.16 * trachea * med

    # heart (Cardiomegaly widens it, mostly towards the patient's left)
    hw = a.heart_hw * (1.08 if a.view == "AP" else 1.0)
    hcx = a.cx + 0.05
    cm = F.get("Cardiomegaly")
    if cm is not None:
        s = (1.3, 1.5, 1.72)[cm.level()]
        hcx += hw * (s - 1.0) * 0.35
        hw *= s
    heart = _edge(_ellipse_d(x, y, hcx, a.heart_cy, hw, a.heart_hh * (1.1 if cm else 1.0)), px)
    img = img * (1 - heart) + 0.68 * heart

    # findings behind the heart/mediastinum stay visible, attenuated (as retrocardiac opacities are)
    occl = 0.55 * np.maximum(med, heart)
    for side in ("right", "left"):
        ctx.lungs[side]["vis"] = ctx.lungs[side]["raw"] * (1 - occl)
    ctx.lung_vis = lung_raw_all * (1 - occl)

    # 2. pleural replacements
    ptx = F.get("Pneumothorax")
    if ptx is not None:
        w = (0.035, 0.06, 0.09)[ptx.level()]
        for side in ptx.sides():
            L = ctx.lungs[side]
            lat = SIDE_SIGN[side]
            icx, icy = L["cx"] - lat * w * 0.9, L["cy"] + w * 1.1
            ia, ib = max(L["a"] - w, 0.03), max(L["b"] - w * 1.3, 0.05)
            d_in = _ellipse_d(x, y, icx, icy, ia, ib)
            rim = L["vis"] * np.clip(d_in / (1.2 * px), 0.0, 1.0)
            img = img * (1 - rim) + 0.0 * rim
            line = L["vis"] * np.clip(1.0 - np.abs(d_in) / (0.9 * px), 0.0, 1.0)
            img = img + 0.40 * line

    eff = F.get("Pleural Effusion")
    if eff is not None:
        h = (0.11, 0.18, 0.27)[eff.level()]
        for side in eff.sides():
            L = ctx.lungs[side]
            u = np.clip((x - L["cx"]) * SIDE_SIGN[side] / L["a"], -1.0, 1.0)
            base = a.dome_y + (0.02 if side == "left" else 0.0) + 0.03
            top = base - h * (0.75 + 0.25 * u)          # meniscus: higher laterally
            fluid = L["vis"] * _edge(top - y, px, 1.5)
            img = img * (1 - fluid) + 0.60 * fluid

    # 3. overlays masked to the visible lung
    atel = F.get("Atelectasis")
    if atel is not None:
        r = np.random.default_rng(atel.seed)
        for side in atel.sides():
            zx, zy = ctx.zone_center(side, atel.zone() or "lower")
            ang = math.radians(r.uniform(8, 22)) * (-SIDE_SIGN[side])
            half = ctx.lungs[side]["a"] * 0.85
            p0 = (zx - half * math.cos(ang), zy - half * math.sin(ang))
            p1 = (zx + half * math.cos(ang), zy + half * math.sin(ang))
            t = (0.018, 0.028, 0.042)[atel.level()]
            band = _edge(_polyline_d(x, y, [p0, p1]) - t / 2, px) * ctx.lungs[side]["vis"]
            img = img + 0.36 * band

    cons = F.get("Consolidation")
    if cons is not None:
        r = np.random.default_rng(cons.seed)
        R = (0.06, 0.085, 0.115)[cons.level()]
        for side in cons.sides():
            zx, zy = ctx.zone_center(side, cons.zone())
            th = np.arctan2(y - zy, x - zx)
            rad = R * (1.0 + sum(0.12 * r.uniform(-1, 1) * np.cos(k * th + r.uniform(0, 6.28)) for k in (2, 3, 5)))
            blob = _edge(np.hypot(x - zx, y - zy) - rad, px, 2.0) * ctx.lungs[side]["vis"]
            img = img * (1 - blob) + 0.74 * blob

    edema = F.get("Edema")
    if edema is not None:
        amp = (0.20, 0.28, 0.36)[edema.level()]
        for side in ("right", "left"):
            hx = a.cx + SIDE_SIGN[side] * (a.lung_dx - 0.05)
            haze = np.exp(-(((x - hx) / 0.085) ** 2 + ((y - (a.lung_cy + 0.04)) / 0.13) ** 2) / 2.0)
            img = img + amp * haze * ctx.lungs[side]["vis"]

    les = F.get("Lung Lesion")
    if les is not None:
        r = np.random.default_rng(les.seed)
        R = (0.03, 0.045, 0.068)[les.level()]
        for side in les.sides():
            zx, zy = ctx.zone_center(side, les.zone())
            zx += r.uniform(-0.02, 0.02)
            zy += r.uniform(-0.02, 0.02)
            disk = _edge(np.hypot(x - zx, y - zy) - R, px) * ctx.lungs[side]["vis"]
            img = img * (1 - disk) + 0.80 * disk

    opa = F.get("Lung Opacity")
    if opa is not None:
        amp = (0.26, 0.34, 0.42)[opa.level()]
        for side in opa.sides():
            zx, zy = ctx.zone_center(side, opa.zone())
            haze = np.exp(-(((x - zx) / 0.065) ** 2 + ((y - zy) / 0.055) ** 2) / 2.0)
            img = img + amp * haze * ctx.lungs[side]["vis"]

    po = F.get("Pleural Other")
    if po is not None:
        t = (0.016, 0.026, 0.04)[po.level()]
        for side in po.sides():
            L = ctx.lungs[side]
            d = _ellipse_d(x, y, L["cx"], L["cy"], L["a"], L["b"])
            lateral = np.clip(((x - L["cx"]) * SIDE_SIGN[side] / L["a"] - 0.1) / 0.2, 0.0, 1.0)
            mid = (y > L["cy"] - 0.22) & (y < L["cy"] + 0.16)
            tt = t * (1.0 + 0.35 * np.sin(y * 60.0))          # lobulated inner margin
            shell = L["vis"] * _edge(-tt - d, px, 1.5) * lateral * mid
            img = img * (1 - shell) + 0.62 * shell

    pna = F.get("Pneumonia")
    if pna is not None:
        r = np.random.default_rng(pna.seed)
        n = (4, 6, 9)[pna.level()]
        for side in pna.sides():
            zx, zy = ctx.zone_center(side, pna.zone())
            patch = np.zeros_like(img)
            for _ in range(n):
                bx, by = zx + r.uniform(-0.06, 0.06), zy + r.uniform(-0.055, 0.055)
                rad = r.uniform(0.018, 0.03)
                patch = np.maximum(patch, _edge(np.hypot(x - bx, y - by) - rad, px, 2.5))
            img = img + 0.36 * patch * ctx.lungs[side]["vis"]

    # 4. bones: spine, clavicles, ribs (fracture = gap + step-off in two adjacent ribs)
    spine = _edge(np.abs(x - a.cx) - 0.028, px) * body
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * y / 0.045)
    bone = 0.10 * spine * (0.6 + 0.4 * vert)
    for side in ("right", "left"):
        s = SIDE_SIGN[side]
        clav = [(a.cx + s * 0.035, 0.155), (a.cx + s * 0.20, 0.115), (a.cx + s * 0.33, 0.125)]
        bone = np.maximum(bone, 0.16 * _edge(_polyline_d(x, y, clav) - 0.013, px))
    frac = F.get("Fracture")
    frac_rib = None
    if frac is not None:
        r = np.random.default_rng(frac.seed)
        frac_rib = (frac.sides()[0], int(r.integers(3, 7)), float(r.uniform(0.55, 0.8)))
    rib_t = 0.012
    for side in ("right", "left"):
        s = SIDE_SIGN[side]
        t = (x - a.cx) * s / (a.body_hw * 0.95)     # 0 at spine, 1 at chest wall
        inside_t = (t > 0.06) & (t < 1.0)
        g = 0.075 * t * t - 0.035 * np.sin(np.pi * np.clip(t, 0.0, 1.0))
        k = np.clip(np.round((y - g - a.rib_y0) / a.rib_step), 0, 8)   # nearest of 9 ribs
        curve = a.rib_y0 + k * a.rib_step + g
        d = np.abs(y - curve) - rib_t
        if frac_rib is not None and frac_rib[0] == side:
            t0 = frac_rib[2]
            this = (k == frac_rib[1]) | (k == frac_rib[1] + 1)   # two adjacent ribs
            gap = this & (t > t0) & (t < t0 + 0.08)
            step = this & (t >= t0 + 0.08) & (t < t0 + 0.22)
            frag = np.abs(y - (curve + 0.024)) - rib_t * 1.5   # displaced, overlapping fragment
            bone = np.maximum(bone, 0.32 * _edge(frag, px) * step)
            d = np.where(step | gap, np.inf, d)
        bone = np.maximum(bone, 0.09 * _edge(d, px) * inside_t)
    img = img + bone * body

    # 5. support devices on top
    dev = F.get("Support Devices")
    if dev is not None:
        img = np.maximum(img, _device_layer(x, y, px, a, dev.device or "ett"))

    # 6. exposure and noise (identical for a twin: same noise seed)
    img = a.gain * img + a.offset + 0.03 * exposure + a.noise_sigma * noise
    return np.clip(img, 0.0, 1.0)


def _device_layer(x, y, px, a: Anatomy, kind: str) -> np.ndarray:
    w = max(0.8 * px, 0.006)
    cx = a.cx
    if kind == "ett":
        pts_l = [(cx - 0.008, 0.0), (cx - 0.008, 0.31)]
        pts_r = [(cx + 0.008, 0.0), (cx + 0.008, 0.31)]
        d = np.minimum(_polyline_d(x, y, pts_l), _polyline_d(x, y, pts_r)) - w
        return 0.95 * _edge(d, px)
    if kind == "ij_line":
        pts = [(cx - 0.13, 0.0), (cx - 0.10, 0.10), (cx - 0.055, 0.2), (cx - 0.035, 0.36)]
        return 0.92 * _edge(_polyline_d(x, y, pts) - w, px)
    if kind == "pacemaker":
        box = _edge(np.maximum(np.abs(x - (cx + 0.27)) - 0.05, np.abs(y - 0.16) - 0.035), px)
        lead = [(cx + 0.22, 0.16), (cx + 0.08, 0.22), (cx + 0.02, 0.40), (cx + 0.03, 0.55), (cx + 0.09, 0.64)]
        return np.maximum(0.97 * box, 0.92 * _edge(_polyline_d(x, y, lead) - w, px))
    if kind == "enteric_tube":
        pts = [(cx + 0.004, 0.0), (cx + 0.012, 0.50), (cx + 0.07, 0.77), (cx + 0.16, 0.80)]
        return 0.90 * _edge(_polyline_d(x, y, pts) - w * 1.2, px)
    raise ValueError(f"unknown device kind: {kind}")


def render_lateral(anat: Anatomy, size: int, noise_seed: int) -> np.ndarray:
    """A simpler LATERAL phantom (anterior on the image left); findings are not drawn on it."""
    x, y = _grid(size)
    px = 1.0 / size
    a = anat
    nrng = np.random.default_rng(noise_seed)
    tex = _smooth_noise(nrng, size, 12)
    exposure = _smooth_noise(nrng, size, 3)
    noise = nrng.standard_normal((size, size)).astype(np.float32)
    img = np.full((size, size), 0.03, dtype=np.float32)
    body = _edge(_ellipse_d(x, y, 0.5, 0.58, 0.36, 0.60), px)
    img = img * (1 - body) + a.tissue * body
    dome = a.dome_y + 0.02 + 1.8 * (x - 0.55) ** 2
    lung = _edge(_ellipse_d(x, y, 0.52, a.lung_cy + 0.02, 0.26, 0.34), px) * _edge(y - dome, px)
    img = img * (1 - lung) + (0.15 + 0.06 * np.clip(1 - np.abs(tex) / 0.25, 0, 1)) * lung
    heart = _edge(_ellipse_d(x, y, 0.36, a.heart_cy + 0.02, 0.13, 0.13), px) * (y < dome + 0.02)
    img = img * (1 - heart) + 0.62 * heart
    below = _edge(dome - y, px) * body
    img = img * (1 - below) + 0.52 * below
    spine_x = 0.79
    spine = _edge(np.abs(x - spine_x) - 0.04, px) * body
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * y / 0.055)
    sternum = _edge(_polyline_d(x, y, [(0.2, 0.12), (0.165, 0.52)]) - 0.01, px)
    img = img + 0.18 * spine * (0.5 + 0.5 * vert) + 0.15 * sternum
    img = a.gain * img + a.offset + 0.03 * exposure + a.noise_sigma * noise
    return np.clip(img, 0.0, 1.0)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(img * 255.0).astype(np.uint8)


def finding_bbox(with_f: np.ndarray, without_f: np.ndarray, thresh: float = 0.02) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` (x1/y1 exclusive) of pixels changed by a finding, or None."""
    diff = np.abs(with_f - without_f) > thresh
    if not diff.any():
        return None
    rows = np.flatnonzero(diff.any(axis=1))
    cols = np.flatnonzero(diff.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
