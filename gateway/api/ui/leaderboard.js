"use strict";
(async function () {
  const status = document.querySelector("#status");
  try {
    const board = await i2v.get("/v1/leaderboard");
    status.textContent = `${board.votes} votes on ${board.comparisons} comparisons.`;
    const body = document.querySelector("#board tbody");
    board.data.forEach((r, i) => {
      const tr = document.createElement("tr");
      const cells = [i + 1, r.model, r.score.toFixed(0), `${r.ci_low.toFixed(0)} – ${r.ci_high.toFixed(0)}`, r.votes, r.wins, r.losses, r.ties];
      cells.forEach((c) => { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
      body.appendChild(tr);
    });
    document.querySelector("#board").hidden = board.data.length === 0;
    if (!board.data.length) status.textContent = "No votes yet: vote on a comparison at /ui/compare/<id>.";
  } catch (err) {
    status.textContent = "Cannot load the leaderboard: " + err.message;
  }
})();
