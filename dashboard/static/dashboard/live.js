"use strict";
// What the dashboard's pages share: numbers as people read them, the live stream (Server-Sent
// Events, resumed by the browser with Last-Event-ID), and charts drawn with uPlot.
window.countstream = (() => {
  const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();

  // Values are 64-bit: BigInt keeps every digit (a Number would round past 2^53).
  const digits = (value) => BigInt(value).toLocaleString("en-US");

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function countUrl(id) {
    return document.body.dataset.countUrl.replace("00000000-0000-0000-0000-000000000000", id);
  }

  function flash(node) {
    node.classList.remove("changed");
    void node.offsetWidth; // restart the highlight animation
    node.classList.add("changed");
  }

  // Open the stream where the page's snapshot ends; `handlers` maps event names to functions.
  function connect(lastId, handlers) {
    const status = document.getElementById("connection");
    const show = (state, label) => { status.dataset.state = state; status.textContent = label; };
    const url = `${document.body.dataset.streamUrl}?last_id=${encodeURIComponent(lastId)}`;
    const source = new EventSource(url);
    source.onopen = () => show("live", "live");
    source.onerror = () => show("down", "reconnecting…");
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => handle(JSON.parse(event.data)));
    }
    source.addEventListener("reset", () => window.location.reload());
    return source;
  }

  // A time-series chart that fills its container's width.
  function chart(container, { label, stepped = false, height = 220 }) {
    const axis = {
      stroke: color("--muted"), grid: { stroke: "#eef0f4", width: 1 }, ticks: { show: false },
      font: "12px system-ui, sans-serif",
    };
    const plot = new uPlot({
      width: container.clientWidth || 600, height,
      padding: [12, 12, 0, 4],
      legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { size: 7 } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [Math.min(0, min), Math.max(1, max * 1.15)] } },
      axes: [axis, { ...axis, size: 56, values: (u, splits) => splits.map((v) => compact.format(v)) }],
      series: [{}, {
        label, stroke: color("--accent"), width: 2, fill: "rgba(79, 70, 229, 0.10)",
        points: { show: false }, ...(stepped ? { paths: uPlot.paths.stepped({ align: 1 }) } : {}),
      }],
    }, [[], []], container);
    new ResizeObserver(() => plot.setSize({ width: container.clientWidth, height })).observe(container);
    return plot;
  }

  return { digits, el, countUrl, flash, connect, chart };
})();
