// Follows a running job: appends new log bytes and reloads its charts until the job ends.
// The page gives the job's URLs in data attributes; nothing else is fetched.
(function () {
  const log = document.getElementById("log");
  if (!log || log.dataset.live !== "true") return;
  let offset = Number(log.dataset.offset || 0);
  const charts = Array.from(document.querySelectorAll("img.chart"));
  async function tick() {
    try {
      const response = await fetch(log.dataset.src + "?offset=" + offset, { credentials: "same-origin" });
      if (response.ok) {
        const text = await response.text();
        if (text.length > 0) {
          log.append(document.createTextNode(text));
          log.scrollTop = log.scrollHeight;
        }
        offset = Number(response.headers.get("x-next-offset") || offset);
        for (const chart of charts) chart.src = chart.dataset.src + "&t=" + Date.now();
        if (response.headers.get("x-job-finished") === "true") return;
      }
    } catch (e) { /* the server restarts: try again */ }
    setTimeout(tick, 2000);
  }
  setTimeout(tick, 2000);
})();
