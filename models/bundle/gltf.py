"""Avatar bundle <-> rigged glTF 2.0 binary (.glb), by hand with json + struct + numpy.

No torch and no heavy dependencies (numpy, Pillow, json, struct only): the render path
reads bundles with :func:`read_glb`.

Layout written by :func:`write_glb` (opens in Blender / three.js / any glTF 2.0 viewer):
  * one scene whose root nodes are the skinned mesh node (no transform, as the spec
    recommends for skinned meshes) and the root joint node(s) of the skeleton;
  * node 0 = mesh node, node 1 + j = joint j, with local TRS derived from the rest matrices;
  * ``skins[0]``: joints = node indices in joint order, inverseBindMatrices = inv(rest)
    (float32 MAT4, column-major);
  * one triangle primitive: POSITION (with min/max), NORMAL, TEXCOORD_0, JOINTS_0 (u16),
    WEIGHTS_0 (f32), indices (u32), material 0;
  * material 0: baseColorTexture (PNG embedded in a bufferView), metallic 0, roughness 1;
  * ``asset.extras`` = ``AvatarMesh.extras`` (body_model, shape_params, format_version, ...).
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
from typing import Any

import numpy as np
from PIL import Image

from models.ioutil import atomic_write_bytes

from .avatar_mesh import (
    BUNDLE_FORMAT_VERSION,
    AvatarMesh,
    BundleError,
    affine_inverse,
    compute_vertex_normals,
    limit_influences,
    normalize_vectors,
)

__all__ = ["BundleError", "encode_glb", "parse_glb", "read_glb", "write_glb"]

GLB_MAGIC = b"glTF"
GLB_VERSION = 2
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
GENERATOR = "avatars"

# glTF enums
_FLOAT, _UNSIGNED_BYTE, _UNSIGNED_SHORT, _UNSIGNED_INT = 5126, 5121, 5123, 5125
_BYTE, _SHORT = 5120, 5122
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_TRIANGLES = 4
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071

_COMPONENT_DTYPES = {
    _BYTE: np.dtype("i1"),
    _UNSIGNED_BYTE: np.dtype("u1"),
    _SHORT: np.dtype("<i2"),
    _UNSIGNED_SHORT: np.dtype("<u2"),
    _UNSIGNED_INT: np.dtype("<u4"),
    _FLOAT: np.dtype("<f4"),
}
_TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}

# A joint's rest matrix must be reproduced by its TRS to this (relative) accuracy.
_TRS_TOL = 1e-4
# PNG zlib level: 6 is the usual size/speed trade-off; decode speed hardly depends on it.
_PNG_COMPRESS_LEVEL = 6


# =============================================================================== writing
def write_glb(path: str | os.PathLike[str], mesh: AvatarMesh) -> None:
    """Validate ``mesh`` and write it to ``path`` as a .glb, atomically.

    The bytes go to a temporary file in the destination directory, which is fsynced and
    then ``os.replace``d over ``path``: readers see either the old file or the new one,
    never a partial file. The file gets mode 0644. Raises BundleError if the mesh is invalid
    (nothing is written then).
    """
    atomic_write_bytes(path, encode_glb(mesh))


def encode_glb(mesh: AvatarMesh) -> bytes:
    """Validate ``mesh`` and return the .glb file contents."""
    mesh.validate()
    j = mesh.num_joints

    normals = (
        compute_vertex_normals(mesh.positions, mesh.faces)
        if mesh.normals is None
        else normalize_vectors(mesh.normals)
    )
    # canonical skin: float32 rows summing to 1, joint 0 in every zero-weight slot
    joints, weights = limit_influences(mesh.joints, mesh.weights)
    rest = mesh.rest_matrices.astype(np.float64)
    ibm = affine_inverse(rest)

    b = _BinBuilder()
    pos = mesh.positions
    attributes = {
        "POSITION": b.accessor(
            pos,
            _FLOAT,
            "VEC3",
            _ARRAY_BUFFER,
            min=[float(x) for x in pos.min(axis=0)],
            max=[float(x) for x in pos.max(axis=0)],
        ),
        "NORMAL": b.accessor(normals, _FLOAT, "VEC3", _ARRAY_BUFFER),
        "TEXCOORD_0": b.accessor(mesh.uvs, _FLOAT, "VEC2", _ARRAY_BUFFER),
        "JOINTS_0": b.accessor(joints, _UNSIGNED_SHORT, "VEC4", _ARRAY_BUFFER),
        "WEIGHTS_0": b.accessor(weights, _FLOAT, "VEC4", _ARRAY_BUFFER),
    }
    indices = b.accessor(mesh.faces.reshape(-1), _UNSIGNED_INT, "SCALAR", _ELEMENT_ARRAY_BUFFER)
    # glTF matrices are column-major: the flat 16 floats of M are M.T in row-major order
    ibm_accessor = b.accessor(ibm.astype(np.float32).transpose(0, 2, 1), _FLOAT, "MAT4", None)
    image_view = b.view(_encode_png(mesh.texture), None)

    # nodes: 0 = skinned mesh, 1 + k = joint k
    nodes: list[dict[str, Any]] = [{"name": "avatar", "mesh": 0, "skin": 0}]
    children: list[list[int]] = [[] for _ in range(j)]
    roots: list[int] = []
    for k in range(j):
        p = int(mesh.parents[k])
        (roots if p < 0 else children[p]).append(1 + k)
    for k in range(j):
        p = int(mesh.parents[k])
        local = rest[k] if p < 0 else affine_inverse(rest[p]) @ rest[k]
        t, q, s = _decompose_trs(local, mesh.joint_names[k])
        node: dict[str, Any] = {
            "name": mesh.joint_names[k],
            "translation": t,
            "rotation": q,
            "scale": s,
        }
        if children[k]:
            node["children"] = children[k]
        nodes.append(node)

    skin: dict[str, Any] = {
        "name": "skeleton",
        "joints": list(range(1, j + 1)),
        "inverseBindMatrices": ibm_accessor,
    }
    if len(roots) == 1:
        skin["skeleton"] = roots[0]

    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": GENERATOR, "extras": mesh.extras},
        "scene": 0,
        "scenes": [{"name": "avatar", "nodes": [0, *roots]}],
        "nodes": nodes,
        "meshes": [
            {
                "name": "avatar",
                "primitives": [
                    {
                        "attributes": attributes,
                        "indices": indices,
                        "material": 0,
                        "mode": _TRIANGLES,
                    }
                ],
            }
        ],
        "skins": [skin],
        "materials": [
            {
                "name": "avatar",
                "pbrMetallicRoughness": {
                    "baseColorTexture": {"index": 0, "texCoord": 0},
                    "metallicFactor": 0.0,
                    "roughnessFactor": 1.0,
                },
            }
        ],
        "samplers": [
            {
                "magFilter": _LINEAR,
                "minFilter": _LINEAR_MIPMAP_LINEAR,
                "wrapS": _CLAMP_TO_EDGE,
                "wrapT": _CLAMP_TO_EDGE,
            }
        ],
        "textures": [{"sampler": 0, "source": 0}],
        "images": [{"name": "texture", "bufferView": image_view, "mimeType": "image/png"}],
        "accessors": b.accessors,
        "bufferViews": b.views,
        "buffers": [{"byteLength": b.length}],
    }
    try:
        text = json.dumps(gltf, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:  # extras were checked, but be explicit
        raise BundleError(f"cannot serialise glTF JSON: {exc}") from None
    json_chunk = _pad4(text.encode("utf-8"), b" ")
    bin_chunk = b.tobytes()  # already 4-byte padded
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    return b"".join(
        [
            struct.pack("<4sII", GLB_MAGIC, GLB_VERSION, total),
            struct.pack("<II", len(json_chunk), CHUNK_JSON),
            json_chunk,
            struct.pack("<II", len(bin_chunk), CHUNK_BIN),
            bin_chunk,
        ]
    )


class _BinBuilder:
    """Accumulates bufferViews (each 4-byte aligned) and accessors for buffer 0."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.length = 0
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def view(self, data: bytes, target: int | None) -> int:
        bv: dict[str, Any] = {"buffer": 0, "byteOffset": self.length, "byteLength": len(data)}
        if target is not None:
            bv["target"] = target
        self.parts.append(data)
        self.length += len(data)
        pad = -self.length % 4
        if pad:
            self.parts.append(b"\0" * pad)
            self.length += pad
        self.views.append(bv)
        return len(self.views) - 1

    def accessor(
        self, arr: np.ndarray, ctype: int, type_: str, target: int | None, **minmax: list[float]
    ) -> int:
        arr = np.ascontiguousarray(arr, dtype=_COMPONENT_DTYPES[ctype])
        count = arr.size // _TYPE_SIZES[type_]
        acc: dict[str, Any] = {
            "bufferView": self.view(arr.tobytes(), target),
            "componentType": ctype,
            "count": count,
            "type": type_,
            **minmax,
        }
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def tobytes(self) -> bytes:
        return b"".join(self.parts)


def _pad4(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


def _encode_png(texture: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(texture, dtype=np.uint8), "RGB").save(
        buf, format="PNG", compress_level=_PNG_COMPRESS_LEVEL
    )
    return buf.getvalue()


def _decompose_trs(m: np.ndarray, name: str) -> tuple[list[float], list[float], list[float]]:
    """Split an affine 4x4 into glTF translation, unit quaternion (x, y, z, w) and scale."""
    t = m[:3, 3]
    a = m[:3, :3]
    s = np.linalg.norm(a, axis=0)
    if np.linalg.det(a) < 0:
        s[0] = -s[0]  # a reflection: carried by a negative scale on x
    r = a / s
    u, _, vt = np.linalg.svd(r)  # nearest proper rotation (removes float noise)
    r = u @ vt
    err = np.abs(r * s - a).max()
    if err > _TRS_TOL * max(1.0, float(np.abs(a).max())):
        raise BundleError(
            f"rest matrix of joint {name!r} (relative to its parent) is not a"
            f" translation * rotation * scale (error {err:.2e}; shear?)"
        )
    q = _quat_from_matrix(r)
    return [float(x) for x in t], [float(x) for x in q], [float(x) for x in s]


def _quat_from_matrix(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, of a proper rotation matrix."""
    m00, m01, m02 = r[0]
    m10, m11, m12 = r[1]
    m20, m21, m22 = r[2]
    tr = m00 + m11 + m22
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(m21 - m12) / s, (m02 - m20) / s, (m10 - m01) / s, 0.25 * s]
    elif m00 > m11 and m00 > m22:
        s = 2.0 * np.sqrt(1.0 + m00 - m11 - m22)
        q = [0.25 * s, (m01 + m10) / s, (m02 + m20) / s, (m21 - m12) / s]
    elif m11 > m22:
        s = 2.0 * np.sqrt(1.0 + m11 - m00 - m22)
        q = [(m01 + m10) / s, 0.25 * s, (m12 + m21) / s, (m02 - m20) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m22 - m00 - m11)
        q = [(m02 + m20) / s, (m12 + m21) / s, 0.25 * s, (m10 - m01) / s]
    qa = np.asarray(q, dtype=np.float64)
    qa /= np.linalg.norm(qa)
    return -qa if qa[3] < 0 else qa


def _matrix_from_trs(node: dict[str, Any]) -> np.ndarray:
    """Local 4x4 (float64) of a glTF node (matrix or TRS)."""
    if "matrix" in node:
        return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T
    x, y, z, w = node.get("rotation", (0.0, 0.0, 0.0, 1.0))
    r = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    m = np.eye(4)
    m[:3, :3] = r * np.asarray(node.get("scale", (1.0, 1.0, 1.0)), dtype=np.float64)
    m[:3, 3] = node.get("translation", (0.0, 0.0, 0.0))
    return m


# =============================================================================== reading
def parse_glb(data: bytes | bytearray | memoryview) -> tuple[dict[str, Any], memoryview]:
    """Split GLB bytes into (glTF JSON dict, BIN chunk). Raises BundleError if malformed."""
    mv = memoryview(data).cast("B")
    if len(mv) < 12 or bytes(mv[:4]) != GLB_MAGIC:
        raise BundleError("not a GLB file (missing 'glTF' magic)")
    _, version, length = struct.unpack_from("<4sII", mv, 0)
    if version != GLB_VERSION:
        raise BundleError(f"unsupported GLB container version {version} (expected 2)")
    if length > len(mv):
        raise BundleError(f"truncated GLB: header says {length} bytes, got {len(mv)}")
    mv = mv[:length]
    chunks: list[tuple[int, memoryview]] = []
    off = 12
    while off < length:
        if off + 8 > length:
            raise BundleError("truncated GLB chunk header")
        clen, ctype = struct.unpack_from("<II", mv, off)
        if off + 8 + clen > length:
            raise BundleError("truncated GLB chunk")
        chunks.append((ctype, mv[off + 8 : off + 8 + clen]))
        off += 8 + clen + (-clen % 4)
    if not chunks or chunks[0][0] != CHUNK_JSON:
        raise BundleError("GLB: first chunk is not JSON")
    try:
        gltf = json.loads(bytes(chunks[0][1]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"GLB: invalid JSON chunk: {exc}") from None
    if not isinstance(gltf, dict):
        raise BundleError("GLB: JSON chunk is not an object")
    bin_chunk = next((c for t, c in chunks[1:] if t == CHUNK_BIN), memoryview(b""))
    return gltf, bin_chunk


def read_glb(src: str | os.PathLike[str] | bytes | bytearray | memoryview) -> AvatarMesh:
    """Read a rigged .glb (a path, or the file's bytes) into an AvatarMesh.

    Accepts what :func:`write_glb` writes and, best effort, other single-primitive skinned
    glTF 2.0 binaries (strided / normalized accessors, JOINTS_1.., u8 joints, TRS or matrix
    nodes, joints not in parent-first order). Raises BundleError for anything that is not a
    valid GLB, not glTF 2.x, has no skinned mesh, or is otherwise unusable.
    Returned arrays are writable copies (nothing references the file buffer).
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = src
    else:
        with open(src, "rb") as f:
            data = f.read()
    gltf, bin_chunk = parse_glb(data)
    try:
        return _to_mesh(gltf, bin_chunk)
    except BundleError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"malformed glTF: {type(exc).__name__}: {exc}") from None


def _to_mesh(gltf: dict[str, Any], bin_chunk: memoryview) -> AvatarMesh:
    asset = gltf.get("asset")
    if not isinstance(asset, dict) or not isinstance(asset.get("version"), str):
        raise BundleError("glTF: missing asset.version")
    if asset["version"].split(".")[0] != "2":
        raise BundleError(f"unsupported glTF version {asset['version']!r} (expected 2.x)")
    extras = asset.get("extras")
    if not isinstance(extras, dict):
        scenes = gltf.get("scenes") or [{}]
        extras = scenes[gltf.get("scene", 0)].get("extras", {})
    extras = dict(extras) if isinstance(extras, dict) else {}
    fv = extras.get("format_version")
    if isinstance(fv, int) and fv > BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"bundle format_version {fv} is newer than this reader ({BUNDLE_FORMAT_VERSION})"
        )

    nodes = gltf.get("nodes", [])
    skins = gltf.get("skins") or []
    if not skins:
        raise BundleError("glTF has no skin (not a rigged avatar)")
    mesh_node = next((n for n in nodes if "mesh" in n and "skin" in n), None)
    if mesh_node is None:
        raise BundleError("glTF has no skinned mesh node (a node with both mesh and skin)")
    skin = skins[mesh_node["skin"]]
    prims = gltf["meshes"][mesh_node["mesh"]]["primitives"]
    if len(prims) != 1:
        raise BundleError(f"expected 1 mesh primitive, got {len(prims)}")
    prim = prims[0]
    if prim.get("mode", _TRIANGLES) != _TRIANGLES:
        raise BundleError(f"primitive mode {prim['mode']} is not TRIANGLES")
    attrs = prim["attributes"]
    for need in ("POSITION", "TEXCOORD_0", "JOINTS_0", "WEIGHTS_0"):
        if need not in attrs:
            raise BundleError(f"mesh primitive has no {need} attribute")

    def acc(i: int) -> np.ndarray:
        return _read_accessor(gltf, bin_chunk, i)

    positions = np.array(acc(attrs["POSITION"]), dtype=np.float32)
    v = positions.shape[0]
    normals = np.array(acc(attrs["NORMAL"]), dtype=np.float32) if "NORMAL" in attrs else None
    uvs = np.array(acc(attrs["TEXCOORD_0"]), dtype=np.float32)
    if "indices" in prim:
        faces = np.array(acc(prim["indices"]), dtype=np.uint32).reshape(-1, 3)
    else:
        faces = np.arange(v, dtype=np.uint32).reshape(-1, 3)

    # skin influences: JOINTS_0/WEIGHTS_0 (+ _1, _2 ... if present)
    sets = 0
    while f"JOINTS_{sets}" in attrs and f"WEIGHTS_{sets}" in attrs:
        sets += 1
    jts = [acc(attrs[f"JOINTS_{i}"]) for i in range(sets)]
    wts = [acc(attrs[f"WEIGHTS_{i}"]) for i in range(sets)]
    joints = np.concatenate(jts, axis=1) if sets > 1 else jts[0]
    weights = np.concatenate(wts, axis=1) if sets > 1 else wts[0]
    if sets > 1 or np.any(np.abs(weights.sum(axis=1, dtype=np.float64) - 1.0) > 1e-3):
        joints, weights = limit_influences(joints.astype(np.int64), weights)
    else:
        joints = np.array(joints)  # range-checked into uint16 by AvatarMesh
        weights = np.array(weights, dtype=np.float32)

    # skeleton
    joint_nodes = [int(n) for n in skin["joints"]]
    if not joint_nodes:
        raise BundleError("skin has no joints")
    node_parent = {c: i for i, n in enumerate(nodes) for c in n.get("children", [])}
    slot = {n: k for k, n in enumerate(joint_nodes)}
    parents = np.full(len(joint_nodes), -1, dtype=np.int32)
    for k, n in enumerate(joint_nodes):
        p = node_parent.get(n)
        while p is not None and p not in slot:  # skip non-joint intermediate nodes
            p = node_parent.get(p)
        if p is not None:
            parents[k] = slot[p]
    names = [nodes[n].get("name") or f"joint_{k}" for k, n in enumerate(joint_nodes)]
    if "inverseBindMatrices" in skin:
        ibm = acc(skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
        if ibm.shape[0] != len(joint_nodes):
            raise BundleError("inverseBindMatrices count != number of joints")
        rest = np.linalg.inv(ibm.astype(np.float64))
        if np.allclose(rest[:, 3], [0, 0, 0, 1], atol=1e-6):
            rest[:, 3] = (0, 0, 0, 1)
    else:  # spec: identity IBMs; the joints' world transforms are the best rest estimate
        rest = np.stack([_world_matrix(nodes, node_parent, n) for n in joint_nodes])

    # parent-first order (files we write already are; others may not be)
    order = _parent_first_order(parents)
    if order is not None:
        remap = np.empty_like(order)
        remap[order] = np.arange(len(order))
        names = [names[k] for k in order]
        parents = np.where(parents[order] < 0, -1, remap[parents[order]]).astype(np.int32)
        rest = rest[order]
        joints = remap[joints.astype(np.int64)].astype(np.uint16)
        joints[weights <= 0] = 0

    texture = _read_base_color_texture(gltf, bin_chunk, prim)

    try:
        mesh = AvatarMesh(
            positions=positions,
            normals=normals,
            uvs=uvs,
            faces=faces,
            joint_names=names,
            parents=parents,
            rest_matrices=rest.astype(np.float32),
            joints=joints,
            weights=weights,
            texture=texture,
            extras=extras,
        )
        mesh.validate(require_extras=False)
    except BundleError as exc:
        raise BundleError(f"invalid avatar in glTF: {exc}") from None
    return mesh


def _read_accessor(gltf: dict[str, Any], bin_chunk: memoryview, index: int) -> np.ndarray:
    """Accessor ``index`` as a [count, ncomp] array (a read-only view where possible)."""
    a = gltf["accessors"][index]
    if "sparse" in a:
        raise BundleError(f"accessor {index}: sparse accessors are not supported")
    dtype = _COMPONENT_DTYPES.get(a["componentType"])
    ncomp = _TYPE_SIZES.get(a["type"])
    if dtype is None or ncomp is None:
        raise BundleError(f"accessor {index}: bad componentType/type")
    if a["type"] in ("MAT2", "MAT3") and dtype.itemsize < 4:
        raise BundleError(f"accessor {index}: padded small-component matrices not supported")
    count = int(a["count"])
    if "bufferView" not in a:
        arr = np.zeros((count, ncomp), dtype=dtype)
    else:
        bv = gltf["bufferViews"][a["bufferView"]]
        buf = gltf["buffers"][bv["buffer"]]
        if bv["buffer"] != 0 or "uri" in buf:
            raise BundleError(f"accessor {index}: external buffers are not supported in a GLB")
        elem = dtype.itemsize * ncomp
        stride = int(bv.get("byteStride", elem))
        start = int(bv.get("byteOffset", 0)) + int(a.get("byteOffset", 0))
        end = start + (stride * (count - 1) + elem if count else 0)
        view_end = int(bv.get("byteOffset", 0)) + int(bv["byteLength"])
        if end > view_end or view_end > len(bin_chunk):
            raise BundleError(f"accessor {index}: data runs past its bufferView / BIN chunk")
        arr = np.ndarray(
            (count, ncomp),
            dtype=dtype,
            buffer=bin_chunk,
            offset=start,
            strides=(stride, dtype.itemsize),
        )
    if a.get("normalized"):
        info = np.iinfo(dtype)
        arr = np.maximum(arr.astype(np.float32) / info.max, -1.0)
    return arr


def _world_matrix(nodes: list[dict[str, Any]], node_parent: dict[int, int], n: int) -> np.ndarray:
    m = _matrix_from_trs(nodes[n])
    p = node_parent.get(n)
    while p is not None:
        m = _matrix_from_trs(nodes[p]) @ m
        p = node_parent.get(p)
    return m


def _parent_first_order(parents: np.ndarray) -> np.ndarray | None:
    """None if every parent precedes its child, else a stable parent-first permutation."""
    idx = np.arange(len(parents))
    if np.all(parents < idx):
        return None
    children: dict[int, list[int]] = {}
    for k, p in enumerate(parents.tolist()):
        children.setdefault(p, []).append(k)
    order: list[int] = []
    stack = list(reversed(children.get(-1, [])))
    while stack:
        k = stack.pop()
        order.append(k)
        stack.extend(reversed(children.get(k, [])))
    if len(order) != len(parents):
        raise BundleError("joint hierarchy has a cycle")
    return np.asarray(order, dtype=np.int64)


def _read_base_color_texture(
    gltf: dict[str, Any], bin_chunk: memoryview, prim: dict[str, Any]
) -> np.ndarray:
    try:
        material = gltf["materials"][prim["material"]]
        tex = gltf["textures"][material["pbrMetallicRoughness"]["baseColorTexture"]["index"]]
        image = gltf["images"][tex["source"]]
    except (KeyError, IndexError, TypeError):
        raise BundleError("mesh has no base colour texture image") from None
    if "bufferView" in image:
        bv = gltf["bufferViews"][image["bufferView"]]
        off = int(bv.get("byteOffset", 0))
        blob = bin_chunk[off : off + int(bv["byteLength"])]
    elif str(image.get("uri", "")).startswith("data:"):
        blob = base64.b64decode(image["uri"].split(",", 1)[1])
    else:
        raise BundleError("texture image is an external file (not embedded in the GLB)")
    try:
        with Image.open(io.BytesIO(blob)) as img:
            if img.mode != "RGB":
                img = img.convert("RGB")
            tex_arr = np.asarray(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise BundleError(f"cannot decode texture image: {exc}") from None
    if not tex_arr.flags.writeable:
        tex_arr = tex_arr.copy()
    return tex_arr
