// Loads mpwg's status page in headless Chromium, waits until its charts have drawn a
// line for every path, saves a screenshot, and prints what a user sees as JSON on
// stdout. tests/operations.rs runs it (inside the daemon's network namespace) and
// checks the result.
//
//   node status_page.mjs URL SCREENSHOT.png PATHS_EXPECTED USER_DATA_DIR
import { chromium } from "playwright-core";

const [url, screenshot, expected, userDataDir] = process.argv.slice(2);
const want = Number(expected);

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
  ],
});
const problems = [];
try {
  const page = context.pages()[0] || await context.newPage();
  page.on("console", m => { if (m.type() === "error") problems.push("console: " + m.text()); });
  page.on("pageerror", e => problems.push("page error: " + e.message));
  page.on("requestfailed", r => problems.push("request failed: " + r.url()));
  const requests = [];
  page.on("request", r => requests.push(r.url()));

  await page.goto(url);
  // The throughput chart has a line per path once two polls have given rates.
  await page.waitForFunction(n => {
    const c = document.getElementById("chart-throughput");
    const series = (c.dataset.series || "").split(",").filter(Boolean);
    return document.querySelectorAll("#paths tr[data-path]").length === n
        && series.length === n && Number(c.dataset.points) >= 2 * n;
  }, want, { timeout: 30000, polling: 200 });

  const seen = await page.evaluate(() => {
    const charts = {};
    for (const c of document.querySelectorAll("canvas")) {
      // Pixels that are not background: the chart really drew something.
      const g = c.getContext("2d");
      const d = g.getImageData(0, 0, c.width, c.height).data;
      let inked = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) inked++;
      charts[c.id] = { points: Number(c.dataset.points), series: c.dataset.series, inked };
    }
    return {
      title: document.title,
      interface: document.getElementById("iface").textContent,
      mode: document.getElementById("mode").textContent,
      connection: document.getElementById("conn").textContent,
      paths: [...document.querySelectorAll("#paths tr[data-path]")].map(tr => ({
        name: tr.querySelector("td.name").textContent,
        state: tr.querySelector(".state").textContent,
        state_attr: tr.dataset.state,
      })),
      peers: [...document.querySelectorAll("#peers tr[data-peer]")].map(tr => ({
        public_key: tr.dataset.peer,
        handshake: tr.querySelector("td.handshake").textContent,
      })),
      charts,
    };
  });
  await page.screenshot({ path: screenshot, fullPage: true });
  seen.requests = [...new Set(requests.map(u => new URL(u).pathname))].sort();
  seen.problems = problems;
  console.log(JSON.stringify(seen));
} finally {
  await context.close();
}
