// The Video page's player: one timeline drives every panel. Each panel draws frame t of its clip's frame strip
// (frames left to right), the map's colour strip over it at the chosen opacity, and the target box of frame t.
"use strict";
(() => {
  const player = document.getElementById("player");
  if (!player) return;
  const count = Number(player.dataset.count);
  const fps = Number(player.dataset.fps);
  const timeline = document.getElementById("timeline");
  const opacity = document.getElementById("opacity");
  const label = document.getElementById("frame-label");
  const play = document.getElementById("play");
  const image = (url) => new Promise((resolve) => {
    if (!url) { resolve(null); return; }
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);
    img.src = url;
  });
  const clips = [...player.querySelectorAll(".clip")].map((section) => ({
    count: Number(section.dataset.count), width: Number(section.dataset.width),
    height: Number(section.dataset.height), boxes: JSON.parse(section.dataset.boxes),
    frames: image(section.dataset.frames),
    panels: [...section.querySelectorAll("canvas.panel")].map((canvas) => ({canvas, map: image(canvas.dataset.map)})),
  }));
  let frame = 0;
  let timer = null;

  function drawPanel(clip, panel, frames, map, t) {
    const {canvas} = panel;
    const context = canvas.getContext("2d");
    const scale = canvas.width / clip.width;
    const cut = [t * clip.width, 0, clip.width, clip.height, 0, 0, canvas.width, canvas.height];
    context.imageSmoothingEnabled = false;
    context.globalAlpha = 1;
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
    if (frames) context.drawImage(frames, ...cut);
    if (map) {
      context.globalAlpha = frames ? Number(opacity.value) : 1;
      context.drawImage(map, ...cut);
      context.globalAlpha = 1;
    }
    context.strokeStyle = "#fff";
    context.lineWidth = 2;
    for (const [boxFrame, x0, y0, x1, y1] of clip.boxes) {
      if (boxFrame === t) context.strokeRect(x0 * scale, y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale);
    }
    canvas.dataset.frame = String(t);
  }

  function draw() {
    for (const clip of clips) {
      const t = Math.min(frame, clip.count - 1);
      for (const panel of clip.panels) drawPanel(clip, panel, clip.loadedFrames, panel.loadedMap, t);
    }
    timeline.value = String(frame);
    label.textContent = `frame ${frame + 1} / ${count}`;
    player.dataset.frame = String(frame);
  }

  function show(next) {
    frame = ((next % count) + count) % count;
    draw();
  }

  function toggle() {
    if (timer === null) {
      timer = setInterval(() => show(frame + 1), 1000 / fps);
      play.textContent = "Pause";
    } else {
      clearInterval(timer);
      timer = null;
      play.textContent = "Play";
    }
    player.dataset.playing = String(timer !== null);
  }

  play.addEventListener("click", toggle);
  document.getElementById("prev").addEventListener("click", () => show(frame - 1));
  document.getElementById("next").addEventListener("click", () => show(frame + 1));
  timeline.addEventListener("input", () => show(Number(timeline.value)));
  opacity.addEventListener("input", draw);
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea")) return;
    const keys = {" ": toggle, ArrowLeft: () => show(frame - 1), ArrowRight: () => show(frame + 1)};
    if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
  });
  Promise.all(clips.map(async (clip) => {
    clip.loadedFrames = await clip.frames;
    for (const panel of clip.panels) panel.loadedMap = await panel.map;
  })).then(() => {
    draw();
    player.dataset.ready = "true";
  });
})();
