"use strict";
// A count's own page: its value and the chart of its recent values, following the stream.
(() => {
  const { digits, el, connect, chart } = window.countstream;
  const state = JSON.parse(document.getElementById("count-state").textContent);
  const $ = (id) => document.getElementById(id);
  const RECENT = 15;
  const count = state.count;
  const points = state.history; // [[event ms, value as string], ...], oldest first
  const plot = chart($("history-chart"), { label: count.name, stepped: true, height: 260 });
  const timeOfDay = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" });

  function draw() {
    $("no-changes").hidden = points.length > 0;
    // The line runs on to now: the value holds until the next change.
    const shown = [...points, [Math.max(Date.now(), points.at(-1)?.[0] ?? 0), count.value]];
    plot.setData([shown.map(([ms]) => ms / 1000), shown.map(([, value]) => Number(value))]);
    $("changes").replaceChildren(...points.slice(-RECENT).reverse().map(([ms, value], i, recent) => {
      const item = el("li");
      const at = new Date(ms);
      const time = el("time", timeOfDay.format(at));
      time.title = at.toLocaleString();
      const before = recent[i + 1];
      const delta = before ? BigInt(value) - BigInt(before[1]) : null;
      const what = el("span", undefined, "what");
      if (delta !== null) what.append(el("span", `${delta >= 0n ? "+" : "−"}${digits(delta < 0n ? -delta : delta)}`, "tag"));
      what.append(digits(value));
      item.append(time, what);
      return item;
    }));
  }

  function follow(change) {
    if (change.id !== count.id || change.version < count.version) return;
    count.version = change.version;
    $("count-version").textContent = change.version;
    if (change.action === "deleted") {
      $("deleted").hidden = false;
      return;
    }
    count.name = change.name || count.name;
    $("count-name").textContent = count.name;
    if (change.value !== count.value) {
      count.value = change.value;
      points.push([change.ts, change.value]);
      if (points.length > state.history_points) points.shift();
    }
    $("count-value").textContent = digits(count.value);
    $("count-value").title = count.value;
    draw();
  }

  draw();
  setInterval(draw, 5000); // the line's end moves with the clock
  connect(state.stream_id, { refresh: ({ changes }) => changes.forEach(follow) });
})();
