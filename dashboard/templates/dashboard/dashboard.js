"use strict";
// The live dashboard: the page starts from the server's snapshot, then applies every refresh
// the consumer announces (Server-Sent Events). Values stay BigInt: counts are 64-bit.
(() => {
  const TOP = 5, FEED = 50;
  const initial = JSON.parse(document.getElementById("dashboard-state").textContent);
  const counts = new Map(initial.counts.map((c) => [c.id, { ...c, value: BigInt(c.value) }]));
  const $ = (id) => document.getElementById(id);
  // Code-point order, like the server's sorted(): rows keep their places on the first refresh.
  const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

  function text(tag, content, className) {
    const node = document.createElement(tag);
    node.textContent = content;
    if (className) node.className = className;
    return node;
  }

  function applyChange(change) {
    const known = counts.get(change.id);
    if (known && change.version < known.version) return; // older than what is shown
    if (change.action === "deleted") counts.delete(change.id);
    else counts.set(change.id, {
      id: change.id, name: change.name || change.id, value: BigInt(change.value), version: change.version,
    });
    addToFeed(change);
  }

  function describe(change) {
    const name = change.name || change.id;
    switch (change.action) {
      case "created": return `${name} created with ${change.value}`;
      case "deleted": return `${name} deleted`;
      case "renamed": return `${change.renamed_from || change.id} renamed to ${name}`;
      default: return `${name}: ${change.old ?? "?"} → ${change.value}`;
    }
  }

  function addToFeed(change) {
    const item = document.createElement("li");
    const at = new Date(change.ts);
    item.append(text("time", at.toLocaleTimeString()), describe(change));
    $("feed").prepend(item);
    while ($("feed").children.length > FEED) $("feed").lastChild.remove();
  }

  function row(count) {
    const tr = document.createElement("tr");
    tr.dataset.countId = count.id;
    tr.append(text("td", "", "name"), text("td", "", "num value"), text("td", "", "num version"));
    return tr;
  }

  function renderCounts(changedIds) {
    const body = $("counts");
    const rows = new Map([...body.children].map((tr) => [tr.dataset.countId, tr]));
    const ordered = [...counts.values()].sort(byName);
    ordered.forEach((count, index) => {
      const tr = rows.get(count.id) || row(count);
      rows.delete(count.id);
      tr.querySelector(".name").textContent = count.name;
      tr.querySelector(".value").textContent = count.value.toString();
      tr.querySelector(".version").textContent = count.version;
      if (body.children[index] !== tr) body.insertBefore(tr, body.children[index] || null);
      if (changedIds.has(count.id)) {
        tr.classList.remove("changed");
        void tr.offsetWidth; // restart the highlight animation
        tr.classList.add("changed");
      }
    });
    rows.forEach((tr) => tr.remove()); // deleted counts
  }

  function renderAggregates() {
    const all = [...counts.values()];
    $("count-total").textContent = all.length;
    $("value-total").textContent = all.reduce((sum, c) => sum + c.value, 0n).toString();
    const top = all.sort((a, b) => (a.value === b.value ? byName(a, b) : a.value > b.value ? -1 : 1));
    $("top").replaceChildren(...top.slice(0, TOP).map((c) => {
      const li = text("li", `${c.name} `);
      li.append(text("b", c.value.toString()));
      return li;
    }));
  }

  function renderOperations(figures) {
    for (const [name, value] of Object.entries(figures)) {
      const node = document.querySelector(`[data-figure="${name}"]`);
      if (node) node.textContent = value ?? "never";
    }
  }

  function setConnection(state, label) {
    $("connection").dataset.state = state;
    $("connection").textContent = label;
  }

  initial.feed.slice().reverse().forEach(addToFeed);
  const source = new EventSource(`stream/?last_id=${encodeURIComponent(initial.stream_id)}`);
  source.onopen = () => setConnection("live", "live");
  source.onerror = () => setConnection("down", "reconnecting…");
  source.addEventListener("refresh", (event) => {
    const changes = JSON.parse(event.data).changes;
    changes.forEach(applyChange);
    renderCounts(new Set(changes.map((c) => c.id)));
    renderAggregates();
  });
  source.addEventListener("operations", (event) => renderOperations(JSON.parse(event.data)));
  source.addEventListener("reset", () => window.location.reload());
})();
