// The avatar web page: pick or drop photo(s), watch the build (Server-Sent Events from
// GET v1/jobs/{id}/events when the gateway has them, else polling GET v1/jobs/{id}),
// then stream the avatar (MJPEG) with a motion, a size and drag-to-orbit, download the
// .glb / an MP4 / the texture, read the quality report, and view the .glb in 3D.
//
// Every URL is relative to the document base, so the page works when the gateway is
// mounted under a path prefix by a reverse proxy.

import { describeQuality, explain } from "./messages.js";

const STAGES = [
  { name: "detect", label: "Finding the person in the photo", span: [0.0, 0.1] },
  { name: "fit", label: "Fitting a 3D body to the person", span: [0.1, 0.5] },
  { name: "texture", label: "Copying the photo onto the body", span: [0.5, 0.6] },
  { name: "inpaint", label: "Filling in the parts the photo does not show", span: [0.6, 0.9] },
  { name: "bake", label: "Building the 3D model", span: [0.9, 1.0] },
];
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const ACCEPTED_TYPES = ["image/jpeg", "image/png", "image/webp"];
const KEY_STORAGE = "avatars.apiKey";
const ID_PATTERN = /^[0-9a-f]{32}$/;
const STREAM_FPS = 24;
const POLL_INTERVAL_MS = 700;
const SSE_IDLE_TIMEOUT_MS = 20000;

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ API access
/** Absolute URL of an API path given relative to the page ("v1/motions"). */
export function apiUrl(path) {
  return new URL(path, document.baseURI).href;
}

function apiKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

class ApiProblem extends Error {
  constructor(status, code, message, details) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

async function problemFrom(response) {
  let code = `http_${response.status}`;
  let message = "";
  let details = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || "";
      details = body.error.details ?? null;
    }
  } catch {
    // not JSON: keep the status code
  }
  if (response.status === 401 || response.status === 403) {
    askForKey();
  }
  return new ApiProblem(response.status, code, message, details);
}

async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(apiUrl(path), {
      ...options,
      headers: { ...authHeaders(), ...(options.headers || {}) },
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiProblem(0, "network_error", String(err && err.message));
  }
  if (!response.ok) throw await problemFrom(response);
  return response;
}

async function getJson(path, options) {
  const response = await request(path, options);
  return response.json();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function showMessage(text, { error = false, code = null } = {}) {
  const box = $("message");
  box.replaceChildren();
  box.className = error ? "message error" : "message";
  const p = document.createElement("span");
  p.textContent = text;
  box.append(p);
  if (code) {
    const small = document.createElement("span");
    small.className = "code";
    small.textContent = `Error code: ${code}`;
    box.append(small);
  }
  box.hidden = false;
}

function showProblem(problem) {
  if (problem && problem.name === "AbortError") return;
  const code = problem && problem.code ? problem.code : "internal_error";
  showMessage(explain(code, problem && problem.details), { error: true, code });
}

function clearMessage() {
  const box = $("message");
  box.hidden = true;
  box.replaceChildren();
}

// ------------------------------------------------------------------ API key
function askForKey() {
  const panel = $("key-panel");
  panel.open = true;
  if (!apiKey()) $("key-status").textContent = "This server asks for an API key.";
}

function setUpKeyForm() {
  const input = $("api-key");
  input.value = apiKey();
  $("key-status").textContent = apiKey() ? "A key is saved for this tab." : "";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    try {
      if (value) sessionStorage.setItem(KEY_STORAGE, value);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage disabled: the key lives until the page is closed
    }
    $("key-status").textContent = value ? "Key saved for this tab." : "No key saved.";
    clearMessage();
    loadMotions().then(() => {
      if (currentAvatar) updateStream();
      else if (avatarFromHash()) showResult(avatarFromHash());
    });
  });
  $("key-clear").addEventListener("click", () => {
    try {
      sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // ignore
    }
    input.value = "";
    $("key-status").textContent = "Key forgotten.";
  });
}

// ------------------------------------------------------------- choosing photos
let chosen = [];

function isAcceptedFile(file) {
  if (ACCEPTED_TYPES.includes(file.type)) return true;
  return !file.type && /\.(jpe?g|png|webp)$/i.test(file.name);
}

function setFiles(fileList) {
  const files = Array.from(fileList || []);
  const good = files.filter(isAcceptedFile);
  const bad = files.filter((f) => !isAcceptedFile(f));
  for (const item of $("previews").querySelectorAll("img")) URL.revokeObjectURL(item.src);
  chosen = good;
  const list = $("previews");
  list.replaceChildren();
  for (const file of good) {
    const li = document.createElement("li");
    const img = document.createElement("img");
    img.src = URL.createObjectURL(file);
    img.alt = `Preview of ${file.name}`;
    const name = document.createElement("span");
    name.textContent = file.name;
    li.append(img, name);
    list.append(li);
  }
  $("create").disabled = good.length === 0;
  if (bad.length) {
    showMessage(
      `${bad.map((f) => f.name).join(", ")}: not a photo we can use. ${explain("invalid_image")}`,
      { error: true, code: "invalid_image" },
    );
  } else {
    clearMessage();
  }
}

function setUpPicker() {
  const input = $("photos");
  const zone = $("drop-zone");
  input.addEventListener("change", () => setFiles(input.files));
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer) setFiles(event.dataTransfer.files);
  });
  // a photo dropped next to the zone should not navigate away from the page
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    upload();
  });
}

async function upload() {
  if (!chosen.length) return;
  clearMessage();
  $("create").disabled = true;
  const form = new FormData();
  for (const file of chosen) form.append("photos", file, file.name);
  showProgress();
  setProgressText("Uploading…");
  let created;
  try {
    const response = await request("v1/avatars", { method: "POST", body: form });
    created = await response.json();
  } catch (problem) {
    const total = chosen.reduce((sum, f) => sum + f.size, 0);
    if (problem.code === "network_error" && total > 20 * 1024 * 1024) {
      problem = new ApiProblem(413, "upload_too_large", "", null);
    }
    $("progress-section").hidden = true;
    $("create").disabled = false;
    showProblem(problem);
    return;
  }
  setAvatarHash(created.avatar_id);
  await followJob(created.avatar_id, created.job_id);
}

// ------------------------------------------------------------------- progress
function showProgress() {
  if (currentAvatar) {
    stopStream(); // a new avatar replaces the one shown
    closeViewer();
    currentAvatar = null;
  }
  $("progress-section").hidden = false;
  $("result-section").hidden = true;
  renderJob({ state: "queued", stage: null, progress: 0, stage_seconds: {} });
}

function setProgressText(text) {
  $("progress-text").textContent = text;
}

/** Show a job: overall percentage, and each stage as done / running / waiting. */
function renderJob(job) {
  // 100 % only once the job succeeded (its last stage may report 1.0 a moment before)
  const percent = job.state === "succeeded" ? 100 : Math.min(99, Math.floor((job.progress || 0) * 100));
  $("progress").value = percent;
  $("progress-percent").textContent = `${percent} %`;
  const currentIndex = STAGES.findIndex((s) => s.name === job.stage);
  const list = $("stages");
  list.replaceChildren();
  STAGES.forEach((stage, index) => {
    let status;
    if (job.state === "succeeded") status = "done";
    else if (job.state === "failed" && index === currentIndex) status = "failed";
    else if (currentIndex >= 0 && index < currentIndex) status = "done";
    else if (index === currentIndex && job.state === "running") status = "current";
    else if ((job.progress || 0) >= stage.span[1] && job.state !== "queued") status = "done";
    else status = "pending";
    const li = document.createElement("li");
    li.className = status;
    const mark = document.createElement("span");
    mark.className = "mark";
    mark.setAttribute("aria-hidden", "true");
    mark.textContent = { done: "✓", current: "▸", failed: "✗", pending: "·" }[status];
    const label = document.createElement("span");
    const words = { done: "done", current: "in progress", failed: "failed", pending: "waiting" }[status];
    label.textContent = `${stage.label} (${words})`;
    li.append(mark, label);
    const seconds = job.stage_seconds && job.stage_seconds[stage.name];
    if (typeof seconds === "number") {
      const secs = document.createElement("span");
      secs.className = "secs";
      secs.textContent = `${seconds.toFixed(1)} s`;
      li.append(secs);
    }
    list.append(li);
  });
  if (job.state === "queued") setProgressText(`${percent} %: waiting for a free worker…`);
  else if (job.state === "running") {
    const stage = STAGES[currentIndex];
    setProgressText(`${percent} %: ${stage ? stage.label : "Working"}…`);
  } else if (job.state === "succeeded") setProgressText("100 %: your avatar is ready.");
  else if (job.state === "failed") setProgressText("The avatar could not be built.");
  else if (job.state === "cancelled") setProgressText("Cancelled.");
}

let jobWatch = null;

/** Server-Sent Events from v1/jobs/{id}/events (read with fetch, so the API key header
 * can be sent). Returns the final job, or null when the caller should poll instead. */
async function watchWithEvents(jobId, onJob, signal) {
  let response;
  try {
    response = await fetch(apiUrl(`v1/jobs/${jobId}/events`), {
      headers: { ...authHeaders(), Accept: "text/event-stream" },
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    return null;
  }
  const type = response.headers.get("content-type") || "";
  if (response.status === 401 || response.status === 403) throw await problemFrom(response);
  if (!response.ok || !type.includes("text/event-stream") || !response.body) {
    // no events endpoint on this gateway (or a proxy that does not pass it): poll
    response.body?.cancel().catch(() => {});
    return null;
  }
  $("progress-source").textContent = "Live updates from the server.";
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let last = null;
  let data = [];
  let eventName = "";
  for (;;) {
    let timer;
    const idle = new Promise((resolve) => {
      timer = setTimeout(() => resolve({ idle: true }), SSE_IDLE_TIMEOUT_MS);
    });
    const chunk = await Promise.race([reader.read(), idle]).finally(() => clearTimeout(timer));
    if (chunk.idle || chunk.done) {
      reader.cancel().catch(() => {});
      return null; // ended (or went quiet) before the job was final: poll instead
    }
    buffer += chunk.value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      if (buffer[newline] === "\r" && newline === buffer.length - 1) break; // \r\n split
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        const name = eventName || "message";
        const payload = data.join("\n");
        data = [];
        eventName = "";
        if (!payload) continue;
        let parsed;
        try {
          parsed = JSON.parse(payload);
        } catch {
          continue;
        }
        if (!parsed || typeof parsed !== "object") continue;
        if (name === "error" && parsed.error) {
          reader.cancel().catch(() => {});
          throw new ApiProblem(0, parsed.error.code, parsed.error.message, parsed.error.details);
        }
        if (name !== "job" && name !== "message") continue; // e.g. timeout: poll instead
        last = { ...(last || {}), ...(parsed.job || parsed) };
        onJob(last);
        if (TERMINAL.has(last.state)) {
          reader.cancel().catch(() => {});
          return last;
        }
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      } else if (line.startsWith("event:")) {
        eventName = line.slice(6).trim();
      }
    }
  }
}

async function watchByPolling(jobId, onJob, signal) {
  $("progress-source").textContent = "Checking for updates regularly.";
  let failures = 0;
  for (;;) {
    if (signal.aborted) throw new DOMException("aborted", "AbortError");
    let job;
    try {
      job = await getJson(`v1/jobs/${jobId}`, { signal, cache: "no-store" });
      failures = 0;
    } catch (problem) {
      if (problem.name === "AbortError" || problem.status) throw problem;
      failures += 1; // network hiccup: retry a few times, slower
      if (failures > 10) throw problem;
      await sleep(POLL_INTERVAL_MS * failures);
      continue;
    }
    onJob(job);
    if (TERMINAL.has(job.state)) return job;
    await sleep(POLL_INTERVAL_MS);
  }
}

async function followJob(avatarId, jobId) {
  if (jobWatch) jobWatch.abort();
  const controller = new AbortController();
  jobWatch = controller;
  $("progress-section").hidden = false;
  let job;
  try {
    job = await watchWithEvents(jobId, renderJob, controller.signal);
    if (!job) job = await watchByPolling(jobId, renderJob, controller.signal);
  } catch (problem) {
    if (problem.name !== "AbortError") showProblem(problem);
    return;
  }
  renderJob(job);
  if (job.state === "succeeded") {
    await showResult(avatarId);
  } else {
    const error = job.error || { code: job.state === "cancelled" ? "cancelled" : "internal_error" };
    showProblem(new ApiProblem(0, error.code, error.message, null));
    $("create").disabled = chosen.length === 0;
  }
}

// --------------------------------------------------------------------- result
let currentAvatar = null;
const view = { yaw: 0, elevation: 5 };
let fetchedStream = null;

function setAvatarHash(avatarId) {
  history.replaceState(null, "", `#avatar=${avatarId}`);
}

function streamUrl() {
  const params = new URLSearchParams({
    motion: $("motion").value || "turntable",
    size: $("size").value,
    fps: String(STREAM_FPS),
    loop: "true",
    yaw: String(Math.round(view.yaw)),
    elevation: String(Math.round(view.elevation)),
  });
  return `v1/avatars/${currentAvatar}/stream?${params}`;
}

/** MJPEG read with fetch and shown frame by frame (used when an API key must be sent as
 * a header, which an <img> cannot do). */
class FetchedMjpeg {
  constructor(img) {
    this.img = img;
    this.controller = null;
    this.objectUrl = null;
  }

  start(path) {
    this.stop();
    const controller = new AbortController();
    this.controller = controller;
    this.run(path, controller.signal).catch((problem) => {
      if (problem.name !== "AbortError") showProblem(problem);
    });
  }

  stop() {
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  async run(path, signal) {
    const response = await request(path, { signal });
    const reader = response.body.getReader();
    let buffer = new Uint8Array(0);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const joined = new Uint8Array(buffer.length + value.length);
      joined.set(buffer);
      joined.set(value, buffer.length);
      buffer = joined;
      for (;;) {
        const end = indexOfHeaderEnd(buffer);
        if (end < 0) break;
        const header = new TextDecoder().decode(buffer.subarray(0, end));
        const match = /content-length:\s*(\d+)/i.exec(header);
        if (!match) {
          buffer = buffer.slice(end + 4);
          continue;
        }
        const start = end + 4;
        const length = Number(match[1]);
        if (buffer.length < start + length) break;
        this.show(buffer.slice(start, start + length));
        buffer = buffer.slice(start + length);
      }
    }
  }

  show(jpeg) {
    const url = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
    const old = this.objectUrl;
    this.objectUrl = url;
    this.img.src = url;
    if (old) setTimeout(() => URL.revokeObjectURL(old), 1000);
  }
}

function indexOfHeaderEnd(bytes) {
  for (let i = 0; i + 3 < bytes.length; i += 1) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

const BLANK = "data:image/gif;base64,R0lGODlhAQABAAAAACw=";

function stopStream() {
  if (fetchedStream) fetchedStream.stop();
  $("stream").src = BLANK;
}

function updateStream() {
  if (!currentAvatar) return;
  const img = $("stream");
  const size = Number($("size").value);
  img.width = size;
  img.height = size;
  $("view-angles").textContent = `Camera: turned ${Math.round(view.yaw)}°, raised ${Math.round(view.elevation)}°.`;
  updateDownloads();
  if (document.hidden) return;
  if (apiKey()) {
    fetchedStream = fetchedStream || new FetchedMjpeg(img);
    fetchedStream.start(streamUrl());
  } else {
    if (fetchedStream) fetchedStream.stop();
    img.src = streamUrl();
  }
}

let streamRetries = 0;

/** The stream <img> failed: ask the API why (an <img> cannot read the error) and either
 * retry (too many streams at once: an old one is still closing) or say what is wrong. */
async function streamFailed() {
  const img = $("stream");
  if (!currentAvatar || !img.src || img.src.startsWith("data:") || img.src.startsWith("blob:")) return;
  const failed = img.src;
  const probe = new URL(failed);
  probe.searchParams.delete("loop");
  probe.searchParams.set("frames", "1");
  try {
    const response = await request(probe.href, { cache: "no-store" });
    await response.arrayBuffer();
  } catch (problem) {
    if (problem.code === "too_many_streams" || problem.code === "rate_limited") {
      if (streamRetries < 5 && img.src === failed) {
        streamRetries += 1;
        setTimeout(() => img.src === failed && updateStream(), 1000 * streamRetries);
      }
      return;
    }
    showProblem(problem);
    return;
  }
  if (streamRetries < 5 && img.src === failed) {
    streamRetries += 1; // it works now: a hiccup
    setTimeout(() => img.src === failed && updateStream(), 500);
  }
}

function updateDownloads() {
  const base = `v1/avatars/${currentAvatar}`;
  const motion = $("motion").value || "turntable";
  const size = Math.min(1024, Number($("size").value));
  $("dl-glb").href = `${base}/avatar.glb`;
  $("dl-glb").download = `avatar-${currentAvatar.slice(0, 8)}.glb`;
  $("dl-mp4").href = `${base}/render.mp4?${new URLSearchParams({ motion, size: String(size), fps: "30" })}`;
  $("dl-mp4").download = `avatar-${currentAvatar.slice(0, 8)}-${motion}.mp4`;
  $("dl-texture").href = `${base}/texture.png`;
  $("dl-texture").download = `avatar-${currentAvatar.slice(0, 8)}-texture.png`;
}

/** Downloads through fetch when an API key has to go in a header; plain links otherwise. */
function setUpDownloads() {
  for (const id of ["dl-glb", "dl-mp4", "dl-texture"]) {
    const link = $(id);
    link.addEventListener("click", async (event) => {
      if (!apiKey()) return; // a plain link: the browser downloads it
      event.preventDefault();
      if (link.dataset.busy) return;
      link.dataset.busy = "1";
      link.setAttribute("aria-busy", "true");
      try {
        const response = await request(link.getAttribute("href"));
        const url = URL.createObjectURL(await response.blob());
        const a = document.createElement("a");
        a.href = url;
        a.download = link.download;
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
      } catch (problem) {
        showProblem(problem);
      } finally {
        delete link.dataset.busy;
        link.removeAttribute("aria-busy");
      }
    });
  }
}

function wrapDegrees(value) {
  return ((((value + 180) % 360) + 360) % 360) - 180;
}

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}

function setUpOrbit() {
  const img = $("stream");
  let drag = null;
  let lastSent = 0;
  let pending = null;
  const send = () => {
    lastSent = performance.now();
    pending = null;
    updateStream();
  };
  const sendSoon = () => {
    const wait = 300 - (performance.now() - lastSent);
    if (wait <= 0) send();
    else if (!pending) pending = setTimeout(send, wait);
  };
  img.addEventListener("pointerdown", (event) => {
    if (!currentAvatar || event.button !== 0) return;
    event.preventDefault();
    img.setPointerCapture(event.pointerId);
    img.classList.add("dragging");
    drag = { x: event.clientX, y: event.clientY, yaw: view.yaw, elevation: view.elevation };
  });
  img.addEventListener("pointermove", (event) => {
    if (!drag) return;
    view.yaw = wrapDegrees(drag.yaw - (event.clientX - drag.x) * 0.5);
    view.elevation = clamp(drag.elevation + (event.clientY - drag.y) * 0.3, -60, 60);
    $("view-angles").textContent = `Camera: turned ${Math.round(view.yaw)}°, raised ${Math.round(view.elevation)}°.`;
    sendSoon();
  });
  const end = () => {
    if (!drag) return;
    drag = null;
    img.classList.remove("dragging");
    clearTimeout(pending);
    send();
  };
  img.addEventListener("pointerup", end);
  img.addEventListener("pointercancel", end);
  img.addEventListener("keydown", (event) => {
    const steps = { ArrowLeft: [15, 0], ArrowRight: [-15, 0], ArrowUp: [0, 10], ArrowDown: [0, -10] };
    if (event.key === "Home") {
      view.yaw = 0;
      view.elevation = 5;
    } else if (steps[event.key]) {
      view.yaw = wrapDegrees(view.yaw + steps[event.key][0]);
      view.elevation = clamp(view.elevation + steps[event.key][1], -60, 60);
    } else {
      return;
    }
    event.preventDefault();
    updateStream();
  });
  $("reset-view").addEventListener("click", () => {
    view.yaw = 0;
    view.elevation = 5;
    updateStream();
  });
  img.addEventListener("error", streamFailed);
  img.addEventListener("load", () => {
    if (!img.src.startsWith("data:")) streamRetries = 0;
  });
  $("motion").addEventListener("change", updateStream);
  $("size").addEventListener("change", updateStream);
  document.addEventListener("visibilitychange", () => {
    if (!currentAvatar) return;
    if (document.hidden) stopStream();
    else updateStream();
  });
}

function textList(className, items) {
  const list = document.createElement("ul");
  list.className = className;
  for (const text of items) {
    const li = document.createElement("li");
    li.textContent = text;
    list.append(li);
  }
  return list;
}

function renderQuality(quality) {
  const box = $("quality");
  box.replaceChildren();
  const { lines, warnings } = describeQuality(quality);
  box.append(textList("quality-list", lines));
  const heading = document.createElement("p");
  heading.textContent = warnings.length ? "Warnings:" : "No warnings.";
  box.append(heading);
  if (warnings.length) box.append(textList("quality-list quality-warnings", warnings));
}

async function showResult(avatarId) {
  let avatar;
  try {
    avatar = await getJson(`v1/avatars/${avatarId}`, { cache: "no-store" });
  } catch (problem) {
    showProblem(problem);
    return;
  }
  if (!avatar.ready) {
    if (avatar.job && !TERMINAL.has(avatar.job.state)) {
      renderJob(avatar.job);
      await followJob(avatarId, avatar.job.id);
    } else if (avatar.job && avatar.job.error) {
      $("progress-section").hidden = false;
      renderJob(avatar.job);
      showProblem(new ApiProblem(0, avatar.job.error.code, avatar.job.error.message, null));
    } else {
      showProblem(new ApiProblem(409, "avatar_not_ready", "", null));
    }
    return;
  }
  currentAvatar = avatarId;
  closeViewer();
  $("result-section").hidden = false;
  renderQuality(avatar.quality);
  updateStream();
  $("result-title").focus?.();
}

// ------------------------------------------------------------------ 3D viewer
let viewer = null;
let viewerLoading = false;

function webglAvailable() {
  try {
    const canvas = document.createElement("canvas");
    return Boolean(canvas.getContext("webgl2") || canvas.getContext("webgl"));
  } catch {
    return false;
  }
}

function closeViewer() {
  if (viewer) viewer.dispose();
  viewer = null;
  $("viewer").hidden = true;
  $("viewer").replaceChildren();
  $("open-3d").textContent = "Show in 3D";
  $("open-3d").setAttribute("aria-expanded", "false");
  $("viewer-status").textContent = "";
}

async function toggleViewer() {
  if (viewerLoading) return;
  if (viewer) {
    closeViewer();
    return;
  }
  const status = $("viewer-status");
  if (!webglAvailable()) {
    status.textContent = explain("webgl_unavailable");
    return;
  }
  viewerLoading = true;
  status.textContent = "Loading the 3D model…";
  const container = $("viewer");
  container.hidden = false;
  try {
    const { openViewer } = await import("./viewer.js");
    viewer = await openViewer(container, apiUrl(`v1/avatars/${currentAvatar}/avatar.glb`), {
      headers: authHeaders(),
      motion: $("viewer-motion").value,
    });
    $("open-3d").textContent = "Hide 3D view";
    $("open-3d").setAttribute("aria-expanded", "true");
    status.textContent = "3D view ready: drag to turn, scroll or pinch to zoom.";
  } catch (err) {
    container.hidden = true;
    container.replaceChildren();
    viewer = null;
    status.textContent = err && err.code === "webgl_unavailable"
      ? explain("webgl_unavailable")
      : `The 3D view could not be shown: ${err && err.message ? err.message : err}`;
  } finally {
    viewerLoading = false;
  }
}

// ---------------------------------------------------------------------- start
async function loadMotions() {
  const select = $("motion");
  let motions = [];
  try {
    motions = (await getJson("v1/motions")).motions || [];
  } catch (problem) {
    if (problem.status === 401 || problem.status === 403) showProblem(problem);
  }
  if (!motions.length) motions = [{ name: "turntable", description: "Turn around" }];
  select.replaceChildren();
  for (const motion of motions) {
    const option = document.createElement("option");
    option.value = motion.name;
    const words = motion.name.replaceAll("_", " ");
    option.textContent = words.charAt(0).toUpperCase() + words.slice(1);
    if (motion.description) option.title = motion.description;
    select.append(option);
  }
  select.value = motions.some((m) => m.name === "turntable") ? "turntable" : motions[0].name;
}

function startOver() {
  stopStream();
  closeViewer();
  if (jobWatch) jobWatch.abort();
  currentAvatar = null;
  history.replaceState(null, "", location.pathname + location.search);
  $("result-section").hidden = true;
  $("progress-section").hidden = true;
  $("photos").value = "";
  setFiles([]);
  clearMessage();
  $("upload-title").scrollIntoView();
  $("photos").focus();
}

function avatarFromHash() {
  const match = /^#avatar=([0-9a-f]{32})$/.exec(location.hash);
  return match && ID_PATTERN.test(match[1]) ? match[1] : null;
}

async function main() {
  setUpKeyForm();
  setUpPicker();
  setUpOrbit();
  setUpDownloads();
  $("result-title").tabIndex = -1;
  $("open-3d").setAttribute("aria-expanded", "false");
  $("open-3d").addEventListener("click", toggleViewer);
  $("viewer-motion").addEventListener("change", () => viewer && viewer.setMotion($("viewer-motion").value));
  $("start-over").addEventListener("click", startOver);
  await loadMotions();
  const avatarId = avatarFromHash();
  if (avatarId) await showResult(avatarId);
  document.documentElement.dataset.ready = "true";
}

main();
