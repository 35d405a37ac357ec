// The blind comparison: arms in a shuffled order with their models hidden, played in sync by one
// play button and one seek bar; a vote reveals the models and each arm's metrics.
"use strict";
const id = decodeURIComponent(location.pathname.split("/").pop());
const $ = (s) => document.querySelector(s);
let order = null;      // shown position -> arm index
let videos = [];       // <video> per shown position
let voted = false;

function shuffle(n) {
  const a = [...Array(n).keys()];
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function fmt(x, d = 2) { return x === null || x === undefined ? "–" : Number(x).toFixed(d); }

function metricsTable(video) {
  const m = video.metrics || {};
  const q = m.quality || {};
  const rows = [
    ["model", video.model], ["cost", "$" + fmt(m.cost_usd, 3)], ["time", fmt(m.total_s, 1) + " s"],
    ["first frame SSIM", fmt(q.first_frame_ssim, 3)], ["motion", fmt(q.motion_magnitude)],
    ["camera", q.camera_motion || "–"], ["flicker", fmt(q.flicker)],
  ];
  return "<table class='metrics'>" + rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("") + "</table>";
}

async function load() {
  const cmp = await i2v.get("/v1/comparisons/" + encodeURIComponent(id));
  $("#prompt").textContent = "“" + cmp.prompt + "”";
  if (!order) order = shuffle(cmp.arms.length);
  if (cmp.status === "queued" || cmp.status === "in_progress") {
    const done = cmp.arms.filter((a) => ["completed", "failed", "cancelled"].includes(a.video.status)).length;
    $("#status").textContent = `Rendering: ${done} of ${cmp.arms.length} clips finished…`;
    setTimeout(load, 1500);
    return;
  }
  $("#status").textContent = cmp.arms.length + " clips, order shuffled, models hidden until you vote.";
  await show(cmp);
}

async function show(cmp) {
  const box = $("#arms");
  box.innerHTML = "";
  videos = [];
  for (const [pos, idx] of order.entries()) {
    const arm = cmp.arms[idx];
    const card = document.createElement("figure");
    card.className = "arm";
    card.dataset.label = arm.label;
    card.innerHTML = `<figcaption>Clip ${pos + 1}</figcaption>`;
    if (arm.video.status === "completed") {
      const v = document.createElement("video");
      v.muted = true;
      v.playsInline = true;
      v.preload = "auto";
      v.src = URL.createObjectURL(await i2v.get(arm.video.output.url));
      card.appendChild(v);
      videos.push(v);
    } else {
      card.insertAdjacentHTML("beforeend", `<p class="failed">No clip: ${arm.video.status}</p>`);
    }
    const reveal = document.createElement("div");
    reveal.className = "reveal";
    reveal.hidden = true;
    reveal.innerHTML = metricsTable(arm.video);
    card.appendChild(reveal);
    box.appendChild(card);
    if (arm.video.status === "completed") {
      const b = document.createElement("button");
      b.dataset.choice = arm.label;
      b.textContent = `Clip ${pos + 1} is best`;
      $("#best").appendChild(b);
    }
  }
  $("#vote").hidden = false;
  $("#play").disabled = $("#seek").disabled = videos.length === 0;
}

// --- one transport for every clip --------------------------------------------------------------
function master() { return videos[0]; }

$("#play").addEventListener("click", async () => {
  const playing = master() && !master().paused;
  if (playing) {
    videos.forEach((v) => v.pause());
  } else {
    const t = master().currentTime;
    videos.forEach((v) => { v.currentTime = t; });
    await Promise.all(videos.map((v) => v.play()));
  }
  $("#play").textContent = playing ? "Play" : "Pause";
});

$("#seek").addEventListener("input", (e) => {
  const m = master();
  if (!m || !m.duration) return;
  const t = (e.target.value / 1000) * m.duration;
  videos.forEach((v) => { v.currentTime = Math.min(t, v.duration || t); });
});

setInterval(() => {
  const m = master();
  if (!m) return;
  $("#time").textContent = m.currentTime.toFixed(1) + " s";
  if (m.duration) $("#seek").value = Math.round((m.currentTime / m.duration) * 1000);
  for (const v of videos.slice(1)) {  // keep followers on the master's clock
    if (!m.paused && Math.abs(v.currentTime - m.currentTime) > 0.08) v.currentTime = m.currentTime;
    if (m.paused !== v.paused) (m.paused ? v.pause() : v.play().catch(() => {}));
  }
}, 50);

// --- the vote ------------------------------------------------------------------------------------
$("#vote").addEventListener("click", async (e) => {
  const choice = e.target.dataset && e.target.dataset.choice;
  if (!choice || voted) return;
  try {
    const vote = await i2v.post(`/v1/comparisons/${encodeURIComponent(id)}/votes`, { choice, voter: $("#voter").value });
    voted = true;
    document.querySelectorAll(".reveal").forEach((r) => { r.hidden = false; });
    document.querySelectorAll("figure.arm").forEach((f) => {
      f.querySelector("figcaption").textContent += " · " + vote.revealed[f.dataset.label];
    });
    $("#result").hidden = false;
    $("#result").innerHTML = `Vote recorded (${choice}). <a href="/ui/leaderboard">See the leaderboard</a>`;
    document.querySelectorAll("#vote button").forEach((b) => { b.disabled = true; });
  } catch (err) {
    $("#result").hidden = false;
    $("#result").textContent = "Vote failed: " + err.message;
  }
});

load().catch((err) => { $("#status").textContent = "Cannot load the comparison: " + err.message; });
