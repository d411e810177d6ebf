"use strict";
// The overview page: it starts from the server's snapshot and follows the stream. Only what
// is on screen follows it (the table's rows, the feed); totals, top counts and the chart come
// with the `operations` figures every two seconds.
(() => {
  const { digits, el, countUrl, flash, connect, chart } = window.countstream;
  const state = JSON.parse(document.getElementById("dashboard-state").textContent);
  const $ = (id) => document.getElementById(id);
  const FEED = 50, RATE_WINDOW = 15 * 60;

  // --- the counts table: one page of the read model's name index -------------------------
  let table = state.table;
  const rows = new Map(); // id -> { version, tr } of the rows on screen

  function row(entry) {
    const tr = el("tr");
    tr.dataset.countId = entry.id;
    const link = el("a", entry.name);
    link.href = countUrl(entry.id);
    const name = el("td", undefined, "name");
    name.append(link);
    tr.append(name, el("td", digits(entry.value), "num value"), el("td", entry.version, "num version"));
    rows.set(entry.id, { version: entry.version, tr });
    return tr;
  }

  function renderTable(page) {
    table = page;
    rows.clear();
    const empty = el("tr", undefined, "empty");
    empty.append(Object.assign(el("td", "No counts match."), { colSpan: 3 }));
    $("counts").replaceChildren(...(page.rows.length ? page.rows.map(row) : [empty]));
    $("table-matches").textContent = page.query
      ? `${digits(page.matches)} starting with “${page.query}”`
      : `${digits(page.matches)} shown by name`;
    $("page-label").textContent = `page ${digits(page.page)} of ${digits(page.pages)}`;
    $("previous-page").disabled = page.page <= 1;
    $("next-page").disabled = page.page >= page.pages;
  }

  let asked = 0;
  async function load(query, page) {
    const ticket = ++asked;
    const params = new URLSearchParams({ q: query, page });
    const response = await fetch(`counts.json?${params}`, { headers: { Accept: "application/json" } });
    if (response.status === 401 || response.status === 403) return window.location.reload();
    if (!response.ok || ticket !== asked) return; // an answer overtaken by a newer question
    const answer = await response.json();
    renderTable(answer);
    const shown = answer.query || answer.page > 1 ? `?${new URLSearchParams({ q: answer.query, page: answer.page })}` : "";
    history.replaceState(null, "", `${window.location.pathname}${shown}`);
  }

  let typing;
  $("search").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => load($("search").value.trim(), 1), 200);
  });
  $("previous-page").addEventListener("click", () => load(table.query, table.page - 1));
  $("next-page").addEventListener("click", () => load(table.query, table.page + 1));

  function followOnScreen(change) {
    const shown = rows.get(change.id);
    if (!shown || change.version < shown.version) return; // not on screen, or older
    shown.version = change.version;
    if (change.action === "deleted") return shown.tr.classList.add("gone");
    shown.tr.querySelector(".name a").textContent = change.name || change.id;
    shown.tr.querySelector(".value").textContent = digits(change.value);
    shown.tr.querySelector(".version").textContent = change.version;
    flash(shown.tr);
  }

  // --- recent changes: events only, placed by the time they happened ---------------------
  const timeOfDay = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" });

  function describe(change) {
    const name = change.name || change.id;
    switch (change.action) {
      case "created": return ["created", `${name} = ${digits(change.value)}`];
      case "deleted": return ["deleted", name];
      case "renamed": return ["renamed", `${change.renamed_from || change.id} → ${name}`];
      default: {
        const delta = change.old == null ? null : BigInt(change.value) - BigInt(change.old);
        const tag = delta == null ? "set" : `${delta >= 0n ? "+" : "−"}${digits(delta < 0n ? -delta : delta)}`;
        return [tag, `${name} = ${digits(change.value)}`];
      }
    }
  }

  function addToFeed(change) {
    if (change.repair || !change.name) return; // a repair is no event
    const [tag, text] = describe(change);
    const at = new Date(change.ts);
    const item = el("li");
    item.dataset.ts = change.ts;
    const time = el("time", timeOfDay.format(at));
    time.dateTime = at.toISOString();
    time.title = at.toLocaleString();
    const what = el("span", undefined, "what");
    const label = el("span", tag, `tag ${change.action}`);
    const link = el("a", text);
    if (change.action !== "deleted") link.href = countUrl(change.id);
    what.append(label, link);
    item.append(time, what);
    const feed = $("feed");
    const later = [...feed.children].find((other) => Number(other.dataset.ts) < change.ts);
    feed.insertBefore(item, later || null);
    while (feed.children.length > FEED) feed.lastChild.remove();
  }

  // --- totals, top counts, pipeline figures ----------------------------------------------
  function renderTop(top) {
    if (!top.length) return $("top").replaceChildren(el("li", "No counts yet.", "empty"));
    const largest = top.reduce((max, e) => (BigInt(e.value) > max ? BigInt(e.value) : max), 0n);
    $("top").replaceChildren(...top.map((entry) => {
      const item = el("li");
      const link = el("a", entry.name, "name");
      link.href = countUrl(entry.id);
      const meter = el("div", undefined, "meter");
      const bar = el("span");
      const share = largest > 0n && BigInt(entry.value) > 0n ? Number((BigInt(entry.value) * 1000n) / largest) / 10 : 0;
      bar.style.width = `${share}%`;
      meter.append(bar);
      item.append(link, el("span", digits(entry.value), "value num"), meter);
      return item;
    }));
  }

  function renderFigures(figures) {
    $("count-total").textContent = digits(figures.count_total);
    $("value-total").textContent = digits(figures.value_total);
    $("value-total").title = figures.value_total;
    for (const node of document.querySelectorAll("[data-figure]")) {
      const value = figures[node.dataset.figure];
      if (value !== undefined) node.textContent = value ?? "never";
    }
    renderTop(figures.top);
  }

  // --- events per second, by the second they happened -----------------------------------
  const rate = new Map(state.rate);
  let latest = state.rate.length ? state.rate[state.rate.length - 1][0] : Math.floor(Date.now() / 1000);
  const rateChart = chart($("rate-chart"), { label: "events/s" });

  // Drawn in 5-second bins (the mean rate of each): 900 single seconds make a comb, not a line.
  const BIN = 5;
  function drawRate(recent) {
    for (const [second, events] of recent) {
      rate.set(second, events);
      latest = Math.max(latest, second);
    }
    for (const second of rate.keys()) if (second <= latest - RATE_WINDOW) rate.delete(second);
    const bins = [], means = [];
    let total = 0, peak = 0;
    for (let start = latest - RATE_WINDOW + 1; start <= latest; start += BIN) {
      let events = 0;
      for (let second = start; second < start + BIN; second++) {
        const n = rate.get(second) || 0;
        events += n;
        peak = Math.max(peak, n);
      }
      total += events;
      bins.push(start + BIN);
      means.push(events / BIN);
    }
    rateChart.setData([bins, means]);
    $("rate-sum").textContent = digits(total);
    $("rate-peak").textContent = digits(peak);
  }

  renderTable(state.table);
  renderTop(state.top);
  drawRate([]);
  state.feed.forEach(addToFeed);
  connect(state.stream_id, {
    refresh: ({ changes }) => changes.forEach((change) => { followOnScreen(change); addToFeed(change); }),
    operations: (figures) => { renderFigures(figures); drawRate(figures.rate || []); },
  });
})();
