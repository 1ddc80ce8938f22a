"""What a synthetic person wears, painted as material labels in the body's UV atlas.

``paint_outfit(body, rng, shape)`` draws an outfit (top, outer coat, dress or bottoms,
shoes, hair, cap, beard, each with its parameters and fabric) and paints every covered
texel of the atlas with a *material label* (SKIN, TOP, PRINT_A, COAT, ...). The labels are
the ground truth's texture (through ``models.synth.materials``) and they drive the
geometry (``models.synth.garments``: which vertices are pushed out by how much) and the
part labels of every render (``parse_classes``).

Regions are chosen on the template body (they follow the anatomy whatever the
phenotype). Front and back differ as real clothes do: prints, necklines, plackets, fly and
buttons are on the front only; back pockets, hoods, long hair and some prints (a jersey's
number) are on the back only.
"""
from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass, field

import numpy as np

# Material labels (index into the per-sample palette).
(SKIN, HAIR, TOP, TOP_ALT, TOP_ALT2, PRINT_A, PRINT_B, TRIM, BOTTOM, BOTTOM_DETAIL, BELT,
 SHOE, SOLE, SOCK, EYE_WHITE, IRIS, PUPIL, BROW, LIP, INNER, BUTTON, HAT, COAT, COAT_TRIM,
 BEARD) = range(25)
N_LABELS = 25

# Part labels of the renders (per pixel) and of the clothed mesh (per face).
PARSE_LABELS = ("background", "hair", "face", "skin", "upper_garment", "lower_garment",
                "dress_coat", "shoes", "hat_accessory")
(P_BG, P_HAIR, P_FACE, P_SKIN, P_UPPER, P_LOWER, P_DRESS, P_SHOES, P_HAT) = range(9)
PARSE_COLOURS = np.array([(0, 0, 0), (120, 60, 20), (255, 200, 160), (200, 120, 90), (220, 40, 40),
                          (40, 80, 220), (160, 40, 200), (60, 200, 60), (250, 220, 30)], np.uint8)

TOP_KINDS = ("tshirt", "longsleeve", "shirt", "loose_top", "hoodie", "tank", "jacket", "blazer")
TOP_P = (0.2, 0.12, 0.14, 0.1, 0.14, 0.06, 0.14, 0.1)
TOP_PATTERNS = ("solid", "stripes", "checks", "print")
BOTTOM_KINDS = ("trousers", "shorts", "skirt")
HAIR_KINDS = ("short", "bob", "ponytail", "long", "bald")
SHOE_KINDS = ("sneakers", "boots", "heels", "flats")
TOP_MATERIALS = {"tshirt": ("jersey", "knit"), "longsleeve": ("jersey", "knit"), "shirt": ("twill", "jersey"),
                 "loose_top": ("jersey", "knit", "fleece"), "hoodie": ("fleece", "knit"), "tank": ("jersey",),
                 "jacket": ("denim", "leather", "twill", "fleece"), "blazer": ("wool", "twill")}
BOTTOM_MATERIALS = {"trousers": ("denim", "twill", "wool"), "shorts": ("denim", "twill", "jersey"),
                    "skirt": ("denim", "twill", "knit", "wool")}
COAT_MATERIALS = ("wool", "twill", "leather")

SKIN_TONES = np.array([(250, 222, 200), (241, 203, 172), (224, 180, 146), (198, 150, 110),
                       (168, 118, 82), (132, 88, 58), (96, 62, 42), (70, 46, 32)], np.float32)
HAIR_COLOURS = np.array([(22, 18, 16), (45, 30, 20), (80, 52, 30), (120, 85, 50),
                         (190, 150, 90), (150, 70, 35), (150, 150, 150), (60, 45, 40)], np.float32)
NEUTRALS = np.array([(240, 240, 238), (25, 25, 28), (120, 120, 125), (40, 50, 80),
                     (60, 85, 130), (185, 165, 125), (90, 70, 50), (150, 30, 40)], np.float32)
DENIM = np.array([(45, 60, 95), (70, 95, 140), (110, 135, 170), (30, 35, 45)], np.float32)


@dataclass
class Outfit:
    """The drawn garments and their shape parameters (lengths in metres or fractions)."""

    top: str
    top_open: bool = False  # jackets, blazers, shirts worn open
    top_loose: float = 0.01  # how far the top stands off the body (m)
    tucked: bool = False
    sleeve: float = 0.5  # 0 shoulder .. 1 wrist; < 0 sleeveless
    hood: bool = False
    collar: bool = False
    coat: bool = False  # a long coat over the top
    coat_open: bool = False
    coat_hem: float = 0.6  # fraction of the leg the coat reaches
    dress: bool = False
    bottom: str = "trousers"
    leg_len: float = 0.95  # fraction of the leg the bottoms (or skirt, dress) reach
    leg_width: float = 0.01  # trousers: stand-off at the hip (m)
    leg_flare: float = 0.0  # trousers: extra stand-off at the ankle (m); skirts: flare (m per m)
    shoes: str = "sneakers"
    shoe_top: float = 0.96
    sole: float = 0.02  # sole height (m)
    hair: str = "short"
    hair_volume: float = 0.015
    hair_end: float = 0.0  # long hair: height it reaches on the back (m, template)
    cap: bool = False
    beard: bool = False
    materials: dict = field(default_factory=dict)  # garment -> fabric name
    waist_y: float = 0.0
    hem_y: float = 0.0

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _colour(rng):
    if rng.random() < 0.35:
        return NEUTRALS[rng.integers(len(NEUTRALS))] * rng.uniform(0.9, 1.1)
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.25, 0.9), rng.uniform(0.3, 0.95))
    return np.array([r, g, b]) * 255


def _contrast(rng, c):
    for _ in range(10):
        d = _colour(rng)
        if np.abs(d - c).sum() > 150:
            return d
    return 255 - c


def parse_classes(outfit: Outfit) -> np.ndarray:
    """Material label -> part label (uint8 [N_LABELS]); SKIN is refined by body part."""
    p = np.full(N_LABELS, P_SKIN, np.uint8)
    upper = P_DRESS if outfit.dress else P_UPPER
    p[[TOP, TOP_ALT, TOP_ALT2, PRINT_A, PRINT_B, TRIM, INNER, BUTTON]] = upper
    p[[BOTTOM, BOTTOM_DETAIL, BELT]] = P_LOWER
    p[[SHOE, SOLE, SOCK]] = P_SHOES
    p[[HAIR, BEARD]] = P_HAIR
    p[[EYE_WHITE, IRIS, PUPIL, BROW, LIP]] = P_FACE
    p[HAT] = P_HAT
    p[[COAT, COAT_TRIM]] = P_DRESS
    return p


def draw_outfit(rng: np.random.Generator, female: bool) -> Outfit:
    top = str(rng.choice(TOP_KINDS, p=TOP_P))
    o = Outfit(top=top)
    o.dress = bool(female and rng.random() < 0.4 and top in ("tshirt", "longsleeve", "tank", "loose_top"))
    o.coat = bool(not o.dress and rng.random() < 0.14 and top not in ("hoodie",))
    o.coat_open = bool(rng.random() < 0.5)
    o.coat_hem = float(rng.uniform(0.35, 0.75))
    o.top_open = bool(top in ("jacket", "blazer") and rng.random() < 0.55)
    o.top_loose = float({"tshirt": rng.uniform(0.006, 0.015), "longsleeve": rng.uniform(0.005, 0.012),
                         "shirt": rng.uniform(0.008, 0.018), "loose_top": rng.uniform(0.02, 0.04),
                         "hoodie": rng.uniform(0.018, 0.032), "tank": rng.uniform(0.004, 0.01),
                         "jacket": rng.uniform(0.015, 0.03), "blazer": rng.uniform(0.012, 0.022)}[top])
    o.sleeve = float({"tshirt": rng.uniform(0.2, 0.45), "longsleeve": rng.uniform(0.9, 0.98), "tank": -1.0,
                      "shirt": rng.uniform(0.9, 0.98) if rng.random() < 0.75 else rng.uniform(0.25, 0.4),
                      "loose_top": rng.uniform(0.3, 0.95), "hoodie": rng.uniform(0.92, 0.99),
                      "jacket": rng.uniform(0.92, 0.98), "blazer": rng.uniform(0.92, 0.98)}[top])
    o.hood = top == "hoodie" or (top == "jacket" and rng.random() < 0.2)
    o.collar = top in ("shirt", "blazer") or (top == "jacket" and not o.hood) or o.coat
    o.tucked = bool(top in ("shirt", "tshirt", "tank") and rng.random() < 0.35)
    o.bottom = str(rng.choice(BOTTOM_KINDS, p=[0.45, 0.2, 0.35] if female else [0.75, 0.25, 0.0]))
    if o.dress:
        o.bottom = "skirt"
    o.leg_len = float({"trousers": rng.uniform(0.9, 0.97), "shorts": rng.uniform(0.2, 0.42),
                       "skirt": rng.uniform(0.25, 0.85)}[o.bottom])
    o.leg_width = float(rng.uniform(0.004, 0.02))
    o.leg_flare = float(rng.uniform(0.0, 0.05) if o.bottom == "trousers" and rng.random() < 0.4
                        else rng.uniform(0.0, 0.35) if o.bottom == "skirt" else 0.0)
    o.shoes = str(rng.choice(SHOE_KINDS, p=[0.45, 0.2, 0.15, 0.2] if female else [0.55, 0.25, 0.0, 0.2]))
    o.shoe_top = float(rng.uniform(0.62, 0.8) if o.shoes == "boots" else rng.uniform(0.95, 0.99))
    o.sole = float({"sneakers": rng.uniform(0.015, 0.035), "boots": rng.uniform(0.02, 0.04),
                    "heels": rng.uniform(0.04, 0.08), "flats": rng.uniform(0.008, 0.015)}[o.shoes])
    o.hair = str(rng.choice(HAIR_KINDS, p=[0.2, 0.25, 0.2, 0.33, 0.02] if female else [0.78, 0.07, 0.03, 0.05, 0.07]))
    o.hair_volume = float(rng.uniform(0.006, 0.02) if o.hair in ("short",) else rng.uniform(0.012, 0.035))
    o.cap = bool(rng.random() < 0.1 and o.hair != "long")
    o.beard = bool(not female and rng.random() < 0.25)
    o.materials = {"top": str(rng.choice(TOP_MATERIALS[top])), "bottom": str(rng.choice(BOTTOM_MATERIALS[o.bottom])),
                   "coat": str(rng.choice(COAT_MATERIALS))}
    if o.dress:
        o.materials["bottom"] = o.materials["top"]
    return o


def paint_outfit(b, rng: np.random.Generator, shape: np.ndarray):
    """-> (material label per covered texel [N] uint8 (order of ``b.cov_idx``), palette
    [N_LABELS,3] float32, clothing description dict, Outfit)."""
    H0 = b.heads0
    female = bool(shape[0] < 0.5)
    o = draw_outfit(rng, female)
    lab = np.full(len(b.tx), SKIN, np.uint8)
    pal = np.zeros((N_LABELS, 3), np.float32)
    # Skin: a continuous range of tones.
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    i = int(t)
    skin = SKIN_TONES[i] * (1 - (t - i)) + SKIN_TONES[min(i + 1, len(SKIN_TONES) - 1)] * (t - i)
    skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 255)
    pal[SKIN] = skin
    pal[LIP] = skin * np.array([0.82, 0.6, 0.6])
    hair_c = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15)
    pal[HAIR] = hair_c
    pal[BEARD] = hair_c * 0.9
    pal[BROW] = hair_c * 0.8
    pal[EYE_WHITE] = (235, 232, 228)
    pal[IRIS] = [(70, 45, 25), (50, 90, 140), (80, 110, 60), (35, 25, 20)][rng.integers(4)]
    pal[PUPIL] = (15, 12, 12)

    eye_y = H0["eye.L"][1]
    neck_y = H0["neck01"][1]
    sh_y = H0["upperarm01.L"][1]
    hip_y = H0["upperleg01.L"][1]
    torso_z = H0["spine03"][2]
    tr, lg, ar = b.g_trunk, b.g_legs, b.g_arms
    tr_front = tr.z > torso_z + 0.02
    tr_back = tr.z < torso_z - 0.02
    desc: dict = {"skin": skin.round().tolist()}

    # --- bottoms ------------------------------------------------------------------------
    if o.materials["bottom"] == "denim":
        pal[BOTTOM] = DENIM[rng.integers(len(DENIM))] * rng.uniform(0.85, 1.15)
    else:
        pal[BOTTOM] = _colour(rng)
    pal[BOTTOM_DETAIL] = pal[BOTTOM] * rng.uniform(0.6, 0.8)
    pal[BELT] = [(30, 25, 20), (90, 60, 35), (20, 20, 20)][rng.integers(3)]
    waist_y = hip_y + rng.uniform(0.06, 0.13)
    o.waist_y = float(waist_y)
    b_tr = tr.y < waist_y
    b_lg = lg.t < o.leg_len
    desc["bottom"] = {"kind": o.bottom, "colour": pal[BOTTOM].round().tolist(), "length": round(o.leg_len, 3)}
    # --- top ----------------------------------------------------------------------------
    tkind = o.top
    pattern = str(rng.choice(TOP_PATTERNS, p=[0.35, 0.25, 0.15, 0.25]))
    if o.materials["top"] == "denim":
        pal[TOP] = DENIM[rng.integers(len(DENIM))] * rng.uniform(0.85, 1.15)
        pattern = "solid"
    elif o.materials["top"] == "leather":
        pal[TOP] = [(25, 22, 20), (70, 45, 30), (110, 70, 40), (40, 40, 45)][rng.integers(4)]
        pattern = "solid"
    else:
        pal[TOP] = _contrast(rng, pal[BOTTOM])
    if o.dress:
        pal[BOTTOM] = pal[TOP]
        pal[BOTTOM_DETAIL] = pal[TOP] * 0.75
    pal[TOP_ALT] = _contrast(rng, pal[TOP])
    pal[TOP_ALT2] = 0.5 * (pal[TOP] + pal[TOP_ALT]) * rng.uniform(0.7, 1.0)
    pal[TRIM] = pal[TOP] * rng.uniform(0.5, 0.8) if rng.random() < 0.5 else _contrast(rng, pal[TOP])
    pal[PRINT_A] = _contrast(rng, pal[TOP])
    pal[PRINT_B] = _contrast(rng, pal[PRINT_A])
    pal[INNER] = [(245, 245, 240), (30, 30, 30), (200, 60, 60), (120, 120, 120)][rng.integers(4)]
    pal[BUTTON] = pal[TOP] * 0.5
    hem_y = hip_y + rng.uniform(-0.06, 0.05) if tkind not in ("loose_top", "hoodie") else hip_y + rng.uniform(-0.08, 0.0)
    if o.dress:
        hem_y = waist_y - 0.01
    sleeve = o.sleeve
    t_tr = (tr.y > hem_y) & (tr.y < neck_y + 0.01)
    if tkind == "tank":
        strap = rng.uniform(0.05, 0.09)
        t_tr &= ~((np.abs(tr.x) > strap) & (tr.y > sh_y - 0.1))
    # Neckline: lower on the front (round or V), close to the neck on the back.
    neck_kind = "crew" if tkind == "hoodie" else str(rng.choice(["round", "v", "crew"]))
    depth = {"round": rng.uniform(0.05, 0.1), "v": rng.uniform(0.08, 0.15), "crew": rng.uniform(0.02, 0.04)}[neck_kind]
    if neck_kind == "v":
        edge_y = neck_y - depth + np.abs(tr.x) * 1.6
    else:
        edge_y = neck_y - depth + (tr.x / 0.09) ** 2 * depth
    neckline = np.where(tr_front, tr.y > edge_y, tr.y > neck_y - 0.015)
    t_tr &= ~neckline
    t_ar = ar.t < sleeve
    desc["top"] = {"kind": tkind, "pattern": pattern, "colour": pal[TOP].round().tolist(),
                   "neckline": neck_kind, "sleeve": round(float(sleeve), 3), "material": o.materials["top"],
                   "open": o.top_open, "hood": o.hood}
    if o.tucked:
        lab[tr.idx[t_tr]] = TOP
        lab[tr.idx[b_tr]] = BOTTOM
    else:
        lab[tr.idx[b_tr]] = BOTTOM
        lab[tr.idx[t_tr]] = TOP
    lab[lg.idx[b_lg]] = BOTTOM
    lab[ar.idx[t_ar]] = TOP
    desc["top"]["tucked"] = o.tucked
    # Pattern of the top (computed on the top's texels only).
    top_tr = lab[tr.idx] == TOP
    ti = np.concatenate([tr.idx[top_tr], ar.idx[t_ar]])
    tx = np.concatenate([tr.x[top_tr], ar.x[t_ar]])
    ty = np.concatenate([tr.y[top_tr], ar.y[t_ar]])
    tz = np.concatenate([tr.z[top_tr], ar.z[t_ar]])
    if pattern == "stripes":
        f = rng.uniform(25, 70)
        ph = rng.uniform(0, 2 * np.pi)
        thr = rng.uniform(-0.3, 0.5)
        lab[ti[np.sin(ty * f + ph) > thr]] = TOP_ALT
    elif pattern == "checks":
        sq = rng.uniform(0.03, 0.07)
        a = (np.floor((tx + 5) / sq) + np.floor((tz + 5) / sq)).astype(np.int32) % 2 == 1
        c = np.floor((ty + 5) / sq).astype(np.int32) % 2 == 1
        lab[ti[a | c]] = TOP_ALT
        lab[ti[a & c]] = TOP_ALT2
    nt = len(tr.idx[top_tr])  # trunk texels come first in ti
    if pattern == "print":  # a print or logo on the chest, front only
        cy = sh_y - rng.uniform(0.08, 0.15)
        cx = rng.uniform(-0.04, 0.04) if rng.random() < 0.7 else rng.choice([-1, 1]) * 0.07
        r = rng.uniform(0.035, 0.08) if abs(cx) < 0.05 else rng.uniform(0.02, 0.035)
        desc["top"]["print"] = _print(rng, lab, ti[:nt], tx[:nt] - cx, ty[:nt] - cy,
                                      (tz[:nt] > torso_z + 0.02) & tr.torso[top_tr], r)
    if rng.random() < 0.15 and tkind not in ("shirt", "blazer"):  # a print on the back only (a jersey's number)
        cy = sh_y - rng.uniform(0.1, 0.2)
        r = rng.uniform(0.05, 0.09)
        desc["top"]["back_print"] = _print(rng, lab, ti[:nt], tx[:nt], ty[:nt] - cy,
                                           (tz[:nt] < torso_z - 0.03) & tr.torso[top_tr], r, kind="text")
    # Collar / neckline trim, front only.
    top_now = t_tr & (lab[tr.idx] != BOTTOM)
    trim_w = rng.uniform(0.008, 0.015)
    lab[tr.idx[top_now & tr_front & (tr.y > edge_y - trim_w)]] = TRIM
    if tkind in ("jacket", "blazer") and o.top_open:  # open: the inner shirt in a front strip
        w = rng.uniform(0.03, 0.07)
        fr = top_now & tr_front & (tr.z > torso_z + 0.04)
        lab[tr.idx[fr & (np.abs(tr.x) < w)]] = INNER
        lab[tr.idx[fr & (np.abs(np.abs(tr.x) - w) < 0.006)]] = TRIM
        lab[ar.idx[np.abs(ar.t - sleeve + 0.03) < 0.02]] = TRIM  # cuffs
    elif tkind in ("jacket", "blazer", "shirt") or (rng.random() < 0.3 and tkind != "tank"):
        # closed: a placket or zip with buttons, front only
        pl = top_now & tr_front & (np.abs(tr.x) < 0.012) & (tr.y > hem_y)
        lab[tr.idx[pl]] = TRIM
        for by in np.arange(neck_y - depth - 0.02, hem_y + 0.02, -0.07):
            lab[tr.idx[pl & ((tr.x ** 2 + (tr.y - by) ** 2) < 0.005 ** 2)]] = BUTTON
    if tkind == "hoodie":  # a front pocket and drawstrings, front only
        pk = top_now & tr_front & (np.abs(tr.x) < rng.uniform(0.08, 0.12)) & (tr.y < hem_y + 0.15) & (tr.y > hem_y + 0.03)
        lab[tr.idx[pk & (np.abs(np.abs(tr.x) - 0.08) < 0.005)]] = TRIM
        for sx in (-0.035, 0.035):
            lab[tr.idx[top_now & tr_front & (np.abs(tr.x - sx) < 0.004) & (tr.y > neck_y - 0.15)]] = TRIM
    if tkind == "tshirt":  # hem of the sleeve
        lab[ar.idx[np.abs(ar.t - sleeve + 0.01) < 0.01]] = TRIM
    if o.hood:  # the hood lying on the upper back: its lining shows at the neck
        hood = (tr.torso | tr.neck) & tr_back & (tr.y > sh_y - 0.12) & (np.abs(tr.x) < 0.14)
        lab[tr.idx[hood]] = TOP
        lab[tr.idx[hood & (tr.y > neck_y - 0.03) & (np.abs(tr.x) < 0.06)]] = INNER
    # Bottoms details: belt (buckle on the front), fly (front), pockets (back only).
    cur = lab[tr.idx]
    if o.bottom != "skirt" and rng.random() < 0.5 and (o.tucked or hem_y > waist_y - 0.02):
        belt = tr.torso & (np.abs(tr.y - (waist_y - 0.015)) < 0.013)
        lab[tr.idx[belt]] = BELT
        lab[tr.idx[belt & tr_front & (np.abs(tr.x) < 0.02) & (tr.z > torso_z + 0.04)]] = BUTTON
        desc["bottom"]["belt"] = True
    if o.bottom != "skirt":
        fly = tr.torso & tr_front & (np.abs(tr.x) < 0.004) & (tr.y < waist_y - 0.03) & (cur == BOTTOM)
        lab[tr.idx[fly]] = BOTTOM_DETAIL
        px0, pw, ph = rng.uniform(0.025, 0.045), rng.uniform(0.06, 0.08), rng.uniform(0.07, 0.1)
        pt = waist_y - rng.uniform(0.05, 0.08)
        ax = np.abs(tr.x)
        pocket = tr_back & (ax > px0) & (ax < px0 + pw) & (tr.y < pt) & (tr.y > pt - ph) & (cur == BOTTOM)
        inner = (ax > px0 + 0.006) & (ax < px0 + pw - 0.006) & (tr.y < pt - 0.006)
        lab[tr.idx[pocket]] = TRIM if rng.random() < 0.3 else BELT
        lab[tr.idx[pocket & inner]] = BOTTOM_DETAIL
        desc["bottom"]["back_pockets"] = bool((pocket & inner).any())
    elif rng.random() < 0.5:  # a pleated skirt
        k = rng.integers(6, 14)
        for g, sel in ((tr, b_tr), (lg, b_lg)):
            ang = np.arctan2(g.x[sel] - np.sign(g.x[sel]) * 0.09, g.z[sel])
            ii = g.idx[sel][np.sin(ang * k) > 0.85]
            lab[ii[lab[ii] == BOTTOM]] = BOTTOM_DETAIL
        desc["bottom"]["pleats"] = int(k)
    if o.dress:
        lab[lab == BOTTOM] = TOP  # one garment
        lab[lab == BOTTOM_DETAIL] = TOP_ALT2
    # --- a long coat over everything above the hem -------------------------------------
    if o.coat:
        pal[COAT] = _colour(rng) if o.materials["coat"] != "leather" else np.array([(25, 22, 20), (70, 45, 30)][rng.integers(2)], np.float32)
        pal[COAT_TRIM] = pal[COAT] * rng.uniform(0.55, 0.8)
        c_tr = (tr.y < neck_y - 0.005) & ~(tr_front & (tr.y > neck_y - rng.uniform(0.06, 0.14)) & (np.abs(tr.x) < 0.07))
        if o.coat_open:
            c_tr &= ~(tr_front & (np.abs(tr.x) < rng.uniform(0.05, 0.1)) & (tr.z > torso_z + 0.02))
        lab[tr.idx[c_tr]] = COAT
        lab[ar.idx[ar.t < rng.uniform(0.92, 0.99)]] = COAT
        c_lg = lg.t < o.coat_hem
        if o.coat_open:
            c_lg &= lg.z < np.median(lg.z) + 0.02
        lab[lg.idx[c_lg]] = COAT
        lab[tr.idx[c_tr & tr_front & (np.abs(tr.x) < 0.012)]] = COAT_TRIM if not o.coat_open else COAT
        desc["bottom"]["back_pockets"] = False  # under the coat
        desc["coat"] = {"colour": pal[COAT].round().tolist(), "open": o.coat_open, "hem": round(o.coat_hem, 3),
                        "material": o.materials["coat"]}
    # --- shoes, socks -------------------------------------------------------------------
    pal[SHOE] = [(25, 25, 25), (240, 240, 240), (90, 60, 40), (40, 45, 80), (150, 30, 30)][rng.integers(5)]
    pal[SOLE] = [(230, 230, 225), (30, 30, 30), (150, 110, 70)][rng.integers(3)]
    pal[SOCK] = [(240, 240, 240), (30, 30, 30), (120, 120, 120)][rng.integers(3)]
    ground = H0["foot.L"][1] - 0.06
    sole_h = ground + 0.02
    shoe_lg = lg.t > o.shoe_top
    lab[lg.idx[shoe_lg]] = SHOE
    lab[b.g_feet.idx] = SHOE
    lab[lg.idx[shoe_lg & (lg.y < sole_h)]] = SOLE
    lab[b.g_feet.idx[b.g_feet.y < sole_h]] = SOLE
    if o.bottom != "trousers" and o.shoes != "boots" and rng.random() < 0.6:
        lab[lg.idx[(lg.t > o.shoe_top - rng.uniform(0.05, 0.25)) & ~shoe_lg & (lab[lg.idx] == SKIN)]] = SOCK
    desc["shoes"] = {"kind": o.shoes, "colour": pal[SHOE].round().tolist()}
    # --- hair, cap, beard, face ---------------------------------------------------------
    hd = b.g_head
    front_line = eye_y + rng.uniform(0.03, 0.06)
    if o.hair != "bald":
        back_cut = {"short": eye_y - rng.uniform(0.0, 0.05), "bob": neck_y - rng.uniform(-0.02, 0.03),
                    "ponytail": eye_y - rng.uniform(0.02, 0.06), "long": neck_y - 0.2}[o.hair]
        line = back_cut + (front_line - back_cut) * np.clip((hd.t + 0.35) / 0.8, 0, 1)
        if o.hair in ("bob", "long"):  # hair falls beside the face to the jaw or lower
            side = (hd.t > -0.35) & (hd.t < 0.45)
            line = np.where(side, np.minimum(line, eye_y - rng.uniform(0.06, 0.1)), line)
            line = np.where(hd.t >= 0.45, np.maximum(line, front_line), line)
        lab[hd.idx[hd.y > line]] = HAIR
        if o.hair == "long":  # over the back, to the shoulder blades or lower, and over the shoulders
            end = sh_y - rng.uniform(0.05, 0.3)
            o.hair_end = float(end)
            width = rng.uniform(0.09, 0.14)
            long_ = (tr.torso | tr.neck) & tr_back & (tr.y > end) & (np.abs(tr.x) < width * (1 - 0.3 * (sh_y - tr.y)))
            lab[tr.idx[long_]] = HAIR
            lab[hd.idx[hd.neck & (hd.z < H0["neck01"][2] + 0.01)]] = HAIR
            if rng.random() < 0.5:  # strands over the front of the shoulders
                over = (tr.torso | tr.neck) & (tr.y > sh_y - rng.uniform(0.04, 0.12)) & (np.abs(tr.x) > 0.05) \
                    & (np.abs(tr.x) < 0.11)
                lab[tr.idx[over]] = HAIR
        elif o.hair == "bob":
            lab[hd.idx[hd.neck & (hd.z < H0["neck01"][2]) & (hd.y > neck_y - 0.04)]] = HAIR
    if o.cap:
        pal[HAT] = _colour(rng)
        cap_line = front_line + 0.005 + (eye_y + 0.045 - front_line) * np.clip((0.5 - hd.t), 0, 1)
        lab[hd.idx[(hd.y > cap_line) & ~hd.neck]] = HAT
    if o.beard:
        fb = hd.idx[(hd.t > 0.2) & (hd.y < eye_y - rng.uniform(0.04, 0.06)) & ~hd.neck
                    & (hd.y > eye_y - 0.16)]
        lab[fb[lab[fb] == SKIN]] = BEARD
    desc["hair"] = {"kind": o.hair, "colour": pal[HAIR].round().tolist(), "cap": o.cap, "beard": o.beard}
    fc = b.g_face
    fx, fy = fc.x, fc.y
    for s in ("L", "R"):
        e = H0[f"eye.{s}"]
        d2 = (fx - e[0]) ** 2 + (fy - e[1]) ** 2
        lab[fc.idx[(d2 < 0.012 ** 2) & (np.abs(fy - e[1]) < 0.0075)]] = EYE_WHITE
        lab[fc.idx[d2 < 0.0065 ** 2]] = IRIS
        lab[fc.idx[d2 < 0.003 ** 2]] = PUPIL
        brow = (np.abs(fy - e[1] - 0.022 - 0.1 * (fx - e[0]) ** 2 / 0.02) < 0.004) & (np.abs(fx - e[0]) < 0.02)
        lab[fc.idx[brow]] = BROW
    mouth = (np.abs(fy - (eye_y - 0.075)) < 0.006 * (1 - (fx / 0.024) ** 2)) & (np.abs(fx) < 0.022)
    lab[fc.idx[mouth]] = LIP
    o.hem_y = float(hem_y)
    desc["outfit"] = o.as_dict()
    return lab, pal, desc, o


def _print(rng, lab, idx, u, v, where, r, kind=None) -> str:
    """Paint a print or logo of radius r centred at (u, v) = 0 on the texels `where`."""
    near = where & (np.abs(u) < 1.2 * r) & (np.abs(v) < 1.2 * r)
    pi, u, v = idx[near], u[near], v[near]
    kind = kind or str(rng.choice(["circle", "ring", "star", "square", "text", "diamond"]))
    if kind == "circle":
        m = u * u + v * v < r * r
    elif kind == "ring":
        m = np.abs(np.sqrt(u * u + v * v) - 0.75 * r) < 0.22 * r
    elif kind == "star":
        ang = np.arctan2(v, u)
        m = np.sqrt(u * u + v * v) < r * (0.55 + 0.45 * np.cos(5 * ang) ** 2)
    elif kind == "square":
        m = (np.abs(u) < r) & (np.abs(v) < r * 0.8)
    elif kind == "diamond":
        m = np.abs(u) + np.abs(v) < r
    else:  # text-like: a row of letter blocks with gaps
        n_letters = int(rng.integers(2, 7))
        w = 2.2 * r / n_letters
        k = np.floor((u + 1.1 * r) / w)
        frac = (u + 1.1 * r) / w - k
        m = (np.abs(v) < 0.3 * r) & (k >= 0) & (k < n_letters) & (frac < 0.7)
        m &= ~((np.abs(v) < 0.08 * r) & (frac > 0.2) & (frac < 0.5) & (k % 2 == 0))
    lab[pi[m]] = PRINT_A
    if kind in ("circle", "square", "diamond"):
        lab[pi[m & (u * u + v * v < (0.45 * r) ** 2)]] = PRINT_B
    return kind


def texel_parse(b, lab: np.ndarray, outfit: Outfit) -> np.ndarray:
    """Part label of every covered texel (SKIN on the head is the face)."""
    p = parse_classes(outfit)[lab]
    p[(lab == SKIN) & b.is_head] = P_FACE
    return p

