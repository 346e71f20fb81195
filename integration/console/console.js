// The target groups console. It renders the state that api/events streams
// (or, in a browser without EventSource, api/state polled every second) and
// sends its forms' writes to api/register and api/deregister. Every URL is
// relative, so the page works at whatever path the site mounts it; nothing
// is fetched from anywhere else. The DOM is updated in place (rows and
// sections are kept by key), so that an update never takes away a form
// being filled in or a button being clicked.
"use strict";

(() => {
  const COLUMNS = [
    { id: "target", label: "Target" },
    { id: "state", label: "State" },
    { id: "reason", label: "Reason" },
    { id: "description", label: "Description" },
    { id: "inflight", label: "In flight" },
    { id: "zone", label: "Zone" },
    { id: "weight", label: "Weight" },
    { id: "slowstart", label: "Slow start" },
  ];
  const STATES = ["initial", "healthy", "unhealthy", "unhealthy.draining", "draining", "unused", "unavailable"];

  const groupsEl = document.getElementById("groups");
  const statusEl = document.getElementById("status");
  const updatedEl = document.getElementById("updated");
  const noticeEl = document.getElementById("notice");
  const zoneEl = document.getElementById("zone");
  const modeEl = document.getElementById("mode");
  const sections = new Map(); // group name → its view
  let readOnly = true; // until the first state says otherwise

  // h builds an element: h("td", {class: "x", text: "y"}, child, …).
  function h(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function setText(e, s) {
    s = String(s);
    if (e.textContent !== s) e.textContent = s;
  }

  function setStatus(status, text) {
    statusEl.dataset.status = status;
    setText(statusEl, text);
  }

  function targetKey(t) {
    return t.port ? `${t.id}:${t.port}` : t.id;
  }

  // say shows the answer to a write under the group's form.
  function say(v, kind, text) {
    v.message.hidden = false;
    v.message.className = "message message-" + kind;
    setText(v.message, text);
  }

  // write posts a register or deregister call; on failure it shows the
  // error under the group's form and returns false.
  async function write(op, group, targets, v) {
    let res, body;
    try {
      res = await fetch("api/" + op, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Target-Groups-Console": "1" },
        body: JSON.stringify({ group, targets }),
      });
      body = await res.json().catch(() => ({}));
    } catch (err) {
      say(v, "error", `${op} failed: ${err.message}`);
      return false;
    }
    if (!res.ok) {
      const e = body.error || {};
      say(v, "error", `${e.code || res.status}: ${e.message || res.statusText}`);
      return false;
    }
    return true;
  }

  function registerForm(group, v) {
    const field = (label, input) => h("label", null, h("span", { text: label }), input);
    const id = h("input", { name: "id", required: true, autocomplete: "off", spellcheck: "false", placeholder: "10.0.0.5" });
    const port = h("input", { name: "port", type: "number", min: 1, max: 65535, inputmode: "numeric" });
    const zone = h("input", { name: "availability_zone", autocomplete: "off", placeholder: "optional" });
    const weight = h("input", { name: "weight", type: "number", min: 1, max: 1000, inputmode: "numeric", placeholder: "1" });
    const submit = h("button", { type: "submit", text: "Register" });
    v.portField = field("Port", port);
    v.portInput = port;
    v.idInput = id;
    const form = h("form", { class: "register" },
      h("fieldset", null, h("legend", { text: "Register a target" }),
        field("Target id", id), v.portField, field("Zone", zone), field("Weight", weight), submit));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const t = { id: id.value.trim() };
      if (port.value && !v.portField.hidden) t.port = Number(port.value);
      if (zone.value.trim()) t.availability_zone = zone.value.trim();
      if (weight.value) t.weight = Number(weight.value);
      submit.disabled = true;
      if (await write("register", group, [t], v)) {
        say(v, "ok", `Registered ${targetKey(t)}: it gets traffic once its health check passes.`);
        form.reset();
      }
      submit.disabled = false;
    });
    return form;
  }

  function groupView(name) {
    const v = { name, rows: new Map(), key: {} };
    v.title = h("h2", { text: name });
    v.badges = h("p", { class: "badges" });
    v.summary = h("p", { class: "summary" });
    v.settingsList = h("dl", { class: "settings" });
    v.settings = h("details", { class: "settings-box" }, h("summary", { text: "Settings" }), v.settingsList);
    v.tbody = h("tbody");
    v.table = h("table", { class: "targets" },
      h("thead", null, h("tr", null,
        ...COLUMNS.map((c) => h("th", { scope: "col", class: "col-" + c.id, text: c.label })),
        h("th", { scope: "col", class: "actions" }, h("span", { class: "visually-hidden", text: "Actions" })))),
      v.tbody);
    v.empty = h("p", { class: "empty", text: "No targets registered.", hidden: true });
    v.message = h("p", { class: "message", role: "status", hidden: true });
    v.form = registerForm(name, v);
    v.root = h("section", { class: "group", dataset: { group: name } },
      h("header", { class: "group-head" }, v.title, v.badges),
      v.summary, v.settings, h("div", { class: "table-wrap" }, v.table), v.empty, v.form, v.message);
    return v;
  }

  // changed reports whether what was last drawn for part differs from val,
  // and remembers val.
  function changed(v, part, val) {
    const k = JSON.stringify(val);
    if (v.key[part] === k) return false;
    v.key[part] = k;
    return true;
  }

  function hcText(hc) {
    if (!hc) return "defaults";
    if (hc.enabled === false) return "off: every target is unavailable and gets traffic";
    const parts = [];
    parts.push([hc.protocol, hc.protocol_version].filter(Boolean).join(" "));
    if (hc.path) parts.push(hc.path);
    if (hc.port) parts.push(`port ${hc.port}`);
    if (hc.interval) parts.push(`every ${hc.interval}`);
    if (hc.timeout) parts.push(`timeout ${hc.timeout}`);
    if (hc.healthy_threshold) parts.push(`healthy after ${hc.healthy_threshold}`);
    if (hc.unhealthy_threshold) parts.push(`unhealthy after ${hc.unhealthy_threshold}`);
    if (hc.matcher) parts.push(`codes ${hc.matcher.http_code || hc.matcher.grpc_code}`);
    if (hc.passive_unhealthy_threshold) parts.push(`passive after ${hc.passive_unhealthy_threshold} failures`);
    return parts.filter(Boolean).join(", ");
  }

  function updateGroup(v, g) {
    const hl = g.health || {};
    const badges = [];
    badges.push(["plain", (g.protocol || "HTTP") + (g.port ? ":" + g.port : "")]);
    if (g.protocol_version) badges.push(["plain", g.protocol_version]);
    if (g.type) badges.push(["plain", g.type]);
    if (g.source) badges.push(["plain", "from " + g.source]);
    const allHealthy = hl.total > 0 && hl.healthy === hl.total;
    badges.push([allHealthy ? "ok" : hl.healthy > 0 ? "warn" : "bad", `${hl.healthy}/${hl.total} healthy`]);
    if (hl.routing_failover) badges.push(["bad failover-routing", "routing failover"]);
    if (hl.dns_failover) badges.push(["warn failover-dns", "DNS failover"]);
    if (changed(v, "badges", badges)) {
      v.badges.replaceChildren(...badges.map(([cls, text]) => h("span", { class: "badge " + cls, text })));
    }
    v.root.dataset.routingFailover = String(!!hl.routing_failover);
    v.root.dataset.dnsFailover = String(!!hl.dns_failover);

    const counts = {};
    for (const d of g.target_health) counts[d.target_health.state] = (counts[d.target_health.state] || 0) + 1;
    let summary = STATES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(" · ") || "no targets";
    if (hl.routing_failover) summary += " — too few healthy targets: traffic goes to every target";
    else if (hl.dns_failover) summary += " — below the DNS failover threshold";
    setText(v.summary, summary);

    const rows = [
      ["ID", g.id], ["ARN", g.arn], ["Type", g.type], ["Protocol", [g.protocol, g.protocol_version].filter(Boolean).join(" ")],
      ["Port", g.port], ["IP address type", g.ip_address_type], ["Health check", hcText(g.health_check)],
    ];
    for (const [k, val] of Object.entries(g.attributes || {}).sort()) rows.push([k, val]);
    for (const [k, val] of Object.entries(g.tags || {}).sort()) rows.push(["tag " + k, val]);
    const shown = rows.filter(([, val]) => val !== undefined && val !== null && val !== "");
    if (changed(v, "settings", shown)) {
      v.settingsList.replaceChildren(...shown.flatMap(([k, val]) => [h("dt", { text: k }), h("dd", { text: val })]));
    }
    v.portField.hidden = g.type === "lambda";
    v.portInput.placeholder = g.port ? String(g.port) : "";
    v.idInput.placeholder = g.type === "lambda" ? "function name or ARN" : g.type === "ip" || !g.type ? (g.ip_address_type === "ipv6" ? "2001:db8::5" : "10.0.0.5") : "host name";
    updateRows(v, g);
  }

  function rowView(v, key) {
    const r = { v, key, cells: {} };
    r.tr = h("tr", { dataset: { target: key } });
    for (const c of COLUMNS) {
      r.cells[c.id] = h("td", { class: "col-" + c.id, dataset: { label: c.label } });
      r.tr.append(r.cells[c.id]);
    }
    r.state = h("span", { class: "state" });
    r.cells.state.append(r.state);
    r.button = h("button", { type: "button" });
    r.button.addEventListener("click", () => act(r));
    r.tr.append(h("td", { class: "actions" }, r.button));
    return r;
  }

  function updateRow(r, d) {
    r.d = d;
    const th = d.target_health;
    const s = th.state;
    r.tr.dataset.state = s;
    let target = r.key;
    if (d.anomaly_detection && d.anomaly_detection.result === "anomalous") target += " (anomalous)";
    setText(r.cells.target, target);
    setText(r.state, s);
    r.state.className = "state state-" + s.replace(".", "-");
    setText(r.cells.reason, th.reason || "—");
    setText(r.cells.description, th.description || "");
    setText(r.cells.inflight, d.in_flight || 0);
    setText(r.cells.zone, d.target.availability_zone || "—");
    setText(r.cells.weight, d.target.weight || 1);
    setText(r.cells.slowstart, d.slow_start_remaining_seconds ? `${d.slow_start_remaining_seconds} s left` : "—");
    const again = s === "draining";
    setText(r.button, again ? "Register again" : "Deregister");
    r.button.className = again ? "register-again" : "deregister";
    r.button.setAttribute("aria-label", `${again ? "Register again" : "Deregister"} ${r.key}`);
  }

  // act deregisters the row's target, or registers a draining one again.
  async function act(r) {
    const d = r.d;
    const again = d.target_health.state === "draining";
    const t = { id: d.target.id };
    if (d.target.port) t.port = d.target.port;
    if (again && d.target.availability_zone) t.availability_zone = d.target.availability_zone;
    if (again && d.target.weight) t.weight = d.target.weight;
    r.button.disabled = true;
    if (await write(again ? "register" : "deregister", r.v.name, [t], r.v)) {
      say(r.v, "ok", again
        ? `Registered ${r.key} again: it goes back through its initial health checks.`
        : `Deregistered ${r.key}: it drains (no new requests) and then leaves the group.`);
    }
    r.button.disabled = false;
  }

  function updateRows(v, g) {
    const seen = new Set();
    let prev = null;
    for (const d of g.target_health) {
      const key = targetKey(d.target);
      seen.add(key);
      let r = v.rows.get(key);
      if (!r) {
        r = rowView(v, key);
        v.rows.set(key, r);
      }
      const want = prev ? prev.tr.nextSibling : v.tbody.firstChild;
      if (want !== r.tr) v.tbody.insertBefore(r.tr, want);
      updateRow(r, d);
      prev = r;
    }
    for (const [key, r] of v.rows) {
      if (!seen.has(key)) {
        r.tr.remove();
        v.rows.delete(key);
      }
    }
    v.table.hidden = g.target_health.length === 0;
    v.empty.hidden = g.target_health.length !== 0;
  }

  function render(st) {
    readOnly = !!st.read_only;
    document.body.classList.toggle("read-only", readOnly);
    modeEl.hidden = !readOnly;
    setText(zoneEl, st.zone ? `zone ${st.zone}` : "");
    const groups = st.groups || [];
    let notice = "";
    if (!st.running) notice = st.message || "The target_groups app is not running.";
    else if (groups.length === 0) notice = "No target groups: declare them in the config, or create them through the admin API.";
    noticeEl.hidden = notice === "";
    setText(noticeEl, notice);
    const seen = new Set();
    let prev = null;
    for (const g of groups) {
      seen.add(g.name);
      let v = sections.get(g.name);
      if (!v) {
        v = groupView(g.name);
        sections.set(g.name, v);
      }
      const want = prev ? prev.root.nextSibling : groupsEl.firstChild;
      if (want !== v.root) groupsEl.insertBefore(v.root, want);
      updateGroup(v, g);
      prev = v;
    }
    for (const [name, v] of sections) {
      if (!seen.has(name)) {
        v.root.remove();
        sections.delete(name);
      }
    }
    const now = new Date();
    setText(updatedEl, "updated " + now.toLocaleTimeString());
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  function connect() {
    if (!("EventSource" in window)) {
      poll();
      return;
    }
    const source = new EventSource("api/events");
    source.addEventListener("state", (e) => {
      render(JSON.parse(e.data));
      setStatus("live", "live");
    });
    source.addEventListener("open", () => {
      document.body.dataset.connections = String(Number(document.body.dataset.connections || 0) + 1);
      setStatus("live", "live");
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (an expired login, an error page): the browser gives
        // up on its own, the page tries again.
        source.close();
        setStatus("offline", "offline, retrying…");
        setTimeout(connect, 2000);
      } else {
        setStatus("reconnecting", "reconnecting…");
      }
    });
  }

  async function poll() {
    try {
      const res = await fetch("api/state", { credentials: "same-origin", cache: "no-store" });
      if (res.ok) {
        render(await res.json());
        setStatus("live", "live (polling)");
      } else {
        setStatus("offline", `error ${res.status}`);
      }
    } catch (err) {
      setStatus("offline", "offline");
    }
    setTimeout(poll, 1000);
  }

  connect();
})();
