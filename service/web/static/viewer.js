// 3D view of the avatar's .glb, drawn by the browser (three.js, vendored: no CDN).
//
// The bundle is a rigged glTF: a skinned mesh in the rest pose (A-pose) and a skeleton
// whose joints are named by the body model. asset.extras.canonical_joints maps the
// canonical joint names (pelvis, left_shoulder, right_elbow, ...) onto those joint names,
// so a motion written once on canonical joints drives any body model, as on the server.
// Motions here rotate joints about axes of the rest pose's world frame (y up, the avatar
// facing +z), like the server's motions.

import {
  AmbientLight,
  Box3,
  Color,
  DirectionalLight,
  HemisphereLight,
  PerspectiveCamera,
  Quaternion,
  Scene,
  SRGBColorSpace,
  Vector3,
  WebGLRenderer,
  GLTFLoader,
  OrbitControls,
} from "./vendor/three.bundle.min.js";

const DEG = Math.PI / 180;
const X = new Vector3(1, 0, 0);
const Y = new Vector3(0, 1, 0);
const Z = new Vector3(0, 0, 1);

/** Built-in motions: time (s) -> {canonical joint: [[axis, degrees], ...]}. The avatar's
 * left is +x. Raising the right arm sideways is a negative turn about z. */
export const MOTIONS = {
  none: () => ({}),
  idle: (t) => {
    const breathe = Math.sin(t * 2 * Math.PI * 0.25);
    const sway = Math.sin(t * 2 * Math.PI * 0.125);
    return {
      spine1: [[X, 1.5 * breathe]],
      spine3: [[X, -1 * breathe]],
      pelvis: [[Y, 6 * sway]],
      neck: [[Y, -4 * sway], [X, 2 * breathe]],
      left_shoulder: [[Z, 2 * breathe]],
      right_shoulder: [[Z, -2 * breathe]],
    };
  },
  wave: (t) => {
    const wave = Math.sin(t * 2 * Math.PI * 1.2);
    return {
      right_shoulder: [[Z, -75]],
      right_elbow: [[Y, -20], [Z, -60 + 25 * wave]],
      neck: [[Z, 4], [Y, -8]],
      spine2: [[Z, 3]],
    };
  },
  arm_swing: (t) => {
    const swing = Math.sin(t * 2 * Math.PI * 0.9);
    return {
      left_shoulder: [[X, 35 * swing]],
      right_shoulder: [[X, -35 * swing]],
      left_elbow: [[X, -15 - 10 * swing]],
      right_elbow: [[X, -15 + 10 * swing]],
      left_hip: [[X, -20 * swing]],
      right_hip: [[X, 20 * swing]],
      pelvis: [[Y, 5 * swing]],
    };
  },
};

class WebGLUnavailable extends Error {
  constructor(message) {
    super(message);
    this.code = "webgl_unavailable";
  }
}

/** Open the 3D view of the .glb at ``url`` in ``container``; resolves to a handle with
 * ``setMotion(name)`` and ``dispose()``. Throws WebGLUnavailable without WebGL. */
export async function openViewer(container, url, { headers = {}, motion = "wave" } = {}) {
  let renderer;
  try {
    renderer = new WebGLRenderer({ antialias: true, alpha: false, preserveDrawingBuffer: true });
  } catch (err) {
    throw new WebGLUnavailable(String(err && err.message));
  }
  renderer.outputColorSpace = SRGBColorSpace;
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  const canvas = renderer.domElement;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", "3D view of your avatar. Drag to turn it, scroll or pinch to zoom.");
  canvas.tabIndex = 0;
  container.replaceChildren(canvas);

  const scene = new Scene();
  scene.background = new Color(0xe9edf2);
  scene.add(new HemisphereLight(0xffffff, 0x8d8d8d, 1.6));
  scene.add(new AmbientLight(0xffffff, 0.4));
  const sun = new DirectionalLight(0xffffff, 1.6);
  sun.position.set(1.5, 3, 2.5);
  scene.add(sun);
  const camera = new PerspectiveCamera(30, 4 / 3, 0.05, 100);

  const loader = new GLTFLoader();
  loader.setRequestHeader(headers);
  let gltf;
  try {
    gltf = await loader.loadAsync(url);
  } catch (err) {
    renderer.dispose();
    throw err;
  }
  scene.add(gltf.scene);

  // frame the whole body
  gltf.scene.updateMatrixWorld(true);
  const box = new Box3().setFromObject(gltf.scene);
  const centre = box.getCenter(new Vector3());
  const height = Math.max(0.5, box.max.y - box.min.y);
  const distance = (height * 0.6) / Math.tan((camera.fov * DEG) / 2);
  camera.position.set(centre.x, centre.y + height * 0.05, centre.z + distance);
  const controls = new OrbitControls(camera, canvas);
  controls.target.copy(centre);
  controls.enableDamping = true;
  controls.minDistance = height * 0.3;
  controls.maxDistance = height * 6;
  controls.listenToKeyEvents(canvas);
  controls.update();

  const rig = await buildRig(gltf);
  let current = MOTIONS[motion] ? motion : "wave";

  const resize = () => {
    const width = Math.max(1, container.clientWidth);
    const heightPx = Math.max(1, container.clientHeight || Math.round(width * 0.75));
    renderer.setSize(width, heightPx, false);
    camera.aspect = width / heightPx;
    camera.updateProjectionMatrix();
  };
  const observer = typeof ResizeObserver === "function" ? new ResizeObserver(resize) : null;
  if (observer) observer.observe(container);
  resize();

  const start = performance.now();
  let frame = 0;
  let running = true;
  const tick = () => {
    if (!running) return;
    rig.pose(MOTIONS[current]((performance.now() - start) / 1000));
    controls.update();
    renderer.render(scene, camera);
    frame += 1;
    container.dataset.frames = String(frame);
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);

  return {
    joints: rig.joints,
    setMotion(name) {
      if (MOTIONS[name]) current = name;
    },
    dispose() {
      running = false;
      if (observer) observer.disconnect();
      controls.dispose();
      scene.traverse((object) => {
        if (object.geometry) object.geometry.dispose();
        const materials = Array.isArray(object.material) ? object.material : [object.material];
        for (const material of materials) {
          if (!material) continue;
          for (const value of Object.values(material)) {
            if (value && value.isTexture) value.dispose();
          }
          material.dispose();
        }
      });
      renderer.dispose();
      renderer.forceContextLoss?.();
    },
  };
}

/** The avatar's bones by canonical joint name, with their rest rotations, and a ``pose``
 * that applies a motion frame. */
async function buildRig(gltf) {
  const json = gltf.parser.json;
  const extras = (json.asset && json.asset.extras) || {};
  const mapping = extras.canonical_joints || {};
  const nodeIndex = new Map((json.nodes || []).map((node, index) => [node.name, index]));
  const joints = {};
  for (const [canonical, name] of Object.entries(mapping)) {
    const index = nodeIndex.get(name);
    if (index === undefined) continue;
    const bone = await gltf.parser.getDependency("node", index);
    if (!bone) continue;
    const parentWorld = new Quaternion();
    if (bone.parent) bone.parent.getWorldQuaternion(parentWorld);
    joints[canonical] = { bone, rest: bone.quaternion.clone(), parentWorld };
  }
  const turn = new Quaternion();
  const delta = new Quaternion();
  const local = new Quaternion();
  return {
    joints: Object.keys(joints),
    pose(frame) {
      for (const [canonical, joint] of Object.entries(joints)) {
        const rotations = frame[canonical];
        if (!rotations) {
          joint.bone.quaternion.copy(joint.rest);
          continue;
        }
        delta.identity();
        for (const [axis, degrees] of rotations) {
          delta.multiply(turn.setFromAxisAngle(axis, degrees * DEG));
        }
        // a turn about a rest-world axis at this joint, expressed in the parent's frame
        local.copy(joint.parentWorld).invert().multiply(delta).multiply(joint.parentWorld);
        joint.bone.quaternion.copy(local).multiply(joint.rest);
      }
    },
  };
}
