// What the page says to people: API error codes and the quality report in plain words.
// No DOM here, so tests can run it in Node.

function megabytes(bytes) {
  return `${Math.round(bytes / (1024 * 1024))} MB`;
}

/** A sentence a person understands for an error code of the API. */
export function explain(code, details = null) {
  const d = details && typeof details === "object" ? details : {};
  switch (code) {
    case "no_person_detected":
      return "We could not find a person in this photo. Use a photo where one person is fully visible, standing and facing the camera.";
    case "fit_failed":
      return "We could not fit a body to this photo (the pose or the person's outline is unclear). Use a photo of the person standing upright, facing the camera, with the whole body visible.";
    case "pose_unsupported":
      return "This pose is not supported: the person is lying, bent over or upside down. Use a photo of the person standing upright, facing the camera, with the whole body visible (sitting, kneeling, crouching, jumping and kicking work too).";
    case "invalid_image":
    case "unsupported_media_type":
      return "This file is not a photo we can read. Use a JPEG, PNG or WebP image (and check that it opens on your device).";
    case "invalid_photo":
      return "The photo could not be read. Try another photo, saved as JPEG or PNG.";
    case "empty_upload":
      return "No photo was received (or the file is empty). Choose a photo and try again.";
    case "upload_too_large":
      return `The photos are too large to upload${d.limit_bytes ? ` (the limit is ${megabytes(d.limit_bytes)} in total)` : ""}. Use fewer or smaller photos.`;
    case "image_too_large":
      return "A photo has too many pixels. Make it smaller (for example 2000 × 3000 pixels) and try again.";
    case "too_many_photos":
      return `Too many photos at once${d.max_photos ? `: use at most ${d.max_photos}` : ""}.`;
    case "storage_unavailable":
    case "job_store_unavailable":
    case "queue_unavailable":
    case "unavailable":
      return "The service is not available right now. Please try again in a minute.";
    case "too_many_requests":
    case "rate_limited":
      return "Too many requests right now. Wait a moment and try again.";
    case "too_many_streams":
      return "Too many videos are playing for you at once. Close another tab or wait a moment.";
    case "auth_unavailable":
      return "The server cannot check API keys right now. Please try again in a minute.";
    case "job_finished":
      return "This avatar is already finished.";
    case "unauthorized":
    case "api_key_required":
    case "missing_api_key":
    case "invalid_api_key":
    case "forbidden":
    case "http_401":
    case "http_403":
      return "This server needs a valid API key. Enter it in the “API key” box above and try again.";
    case "avatar_not_found":
    case "job_not_found":
      return "This avatar does not exist (any more). Make a new one from a photo.";
    case "avatar_not_ready":
      return "The avatar is not ready yet. Wait until it is built.";
    case "unknown_motion":
      return "That motion is not available on this server.";
    case "model_asset_missing":
      return "The server is missing a model file and cannot build avatars. Please tell whoever runs this server.";
    case "worker_crashed":
      return "The server stopped while building this avatar. Please try again; if it happens again, try another photo.";
    case "timeout":
      return "Building this avatar took too long and was stopped. Please try again, or try a smaller photo.";
    case "cancelled":
    case "job_cancelled":
      return "Building this avatar was cancelled.";
    case "network_error":
      return "The server could not be reached. Check your connection and try again.";
    case "webgl_unavailable":
      return "Your browser cannot show 3D graphics here (WebGL is off or not supported). The moving picture and the downloads still work.";
    default:
      return "Something went wrong on the server. Please try again; if it keeps happening, try another photo.";
  }
}

function percentText(value) {
  return `${Math.round(value * 100)} %`;
}

function mean(value) {
  const list = Array.isArray(value) ? value : [value];
  const numbers = list.filter((v) => typeof v === "number" && Number.isFinite(v));
  return numbers.length ? numbers.reduce((a, b) => a + b, 0) / numbers.length : null;
}

const WARNINGS = {
  person_too_small: "The person is small in the photo. A closer photo (the person filling most of the height) gives more detail.",
  person_cut_off: "Part of the person is cut off at the edge of the photo. The missing parts were guessed.",
};

/** The quality report in plain words. */
export function describeQuality(quality) {
  const lines = [];
  const warnings = [];
  if (!quality) return { lines: ["No quality report is available for this avatar."], warnings };
  const fit = quality.fit || {};
  const iou = mean(fit.silhouette_iou);
  if (iou !== null) {
    const verdict = iou >= 0.85 ? "very good" : iou >= 0.7 ? "good" : iou >= 0.5 ? "fair" : "poor";
    lines.push(`Body fit: ${verdict}. The fitted body and the person's outline in the photo overlap by ${percentText(iou)} (fit IoU ${iou.toFixed(2)}).`);
  }
  const kp = mean(fit.keypoint_error_pct);
  if (kp !== null) {
    lines.push(`Joints (shoulders, elbows, knees, …) are on average ${kp.toFixed(1)} % of the person's height away from where the photo shows them.`);
  }
  const observed = quality.texture && quality.texture.observed_fraction;
  if (typeof observed === "number") {
    lines.push(`${percentText(observed)} of the skin and clothing comes straight from the photo; the rest (such as the back) was filled in.`);
  }
  for (const code of quality.warnings || []) {
    warnings.push(WARNINGS[code] || `Warning: ${String(code).replaceAll("_", " ")}.`);
  }
  return { lines, warnings };
}

