// The web phone's page: draws the server's log of events, and sends what the person
// (or the helpdesk) does. Plain JavaScript, no build step.
"use strict";

const phones = new Map(); // index -> {number, channel, screen, tab, typing}
let current = null;
let after = 0;
let deskConversation = null;

const $ = (id) => document.getElementById(id);

function element(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function channelName(channel) {
  return channel === "whatsapp" ? "WhatsApp" : "SMS";
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body || {}),
  });
  if (!response.ok) {
    let why = "HTTP " + response.status;
    try { why = (await response.json()).error || why; } catch (_) { /* not JSON */ }
    throw new Error(why);
  }
}

function notice(index, text) {
  const phone = phones.get(index);
  if (!phone) return;
  const note = element("p", { class: "notice", role: "status", "data-testid": "notice" }, text);
  phone.screen.append(note);
  setTyping(index, false);
  scrollDown(phone.screen);
}

function scrollDown(screen) {
  screen.scrollTop = screen.scrollHeight;
}

function addPhone(event) {
  const index = event.phone;
  if (phones.has(index)) return;
  const label = channelName(event.channel) + " " + event.number;
  const tab = element("button", {
    type: "button", role: "tab", id: "tab-" + index, "aria-selected": "false",
    "aria-controls": "screen-" + index, "data-testid": "phone-tab", "data-channel": event.channel,
    tabindex: "-1",
  }, label);
  tab.addEventListener("click", () => select(index));
  tab.addEventListener("keydown", (key) => {
    const order = [...phones.keys()];
    const at = order.indexOf(index);
    if (key.key === "ArrowRight" || key.key === "ArrowLeft") {
      const next = order[(at + (key.key === "ArrowRight" ? 1 : order.length - 1)) % order.length];
      select(next);
      phones.get(next).tab.focus();
      key.preventDefault();
    }
  });
  $("tabs").append(tab);
  const screen = element("div", {
    class: "screen", id: "screen-" + index, role: "tabpanel", "aria-labelledby": "tab-" + index,
    "aria-live": "polite", "data-testid": "screen", "data-channel": event.channel,
  });
  screen.hidden = true;
  $("screens").append(screen);
  phones.set(index, { number: event.number, channel: event.channel, screen, tab, label, typing: null });
  if (current === null) select(index);
}

function select(index) {
  current = index;
  for (const [i, phone] of phones) {
    const on = i === index;
    phone.tab.setAttribute("aria-selected", on ? "true" : "false");
    phone.tab.tabIndex = on ? 0 : -1;
    phone.screen.hidden = !on;
  }
  const phone = phones.get(index);
  $("phone-title").textContent = phone.label;
  $("location").hidden = phone.channel !== "whatsapp";
  showTyping();
  scrollDown(phone.screen);
}

function setTyping(index, on) {
  const phone = phones.get(index);
  if (!phone) return;
  clearTimeout(phone.typing);
  phone.typing = on ? setTimeout(() => setTyping(index, false), 40000) : null;
  showTyping();
}

function showTyping() {
  const phone = phones.get(current);
  $("typing").hidden = !(phone && phone.typing);
}

function choicesOf(event) {
  const box = element("div", { class: "choices", role: "group", "aria-label": "Choices" });
  const tap = (choice, title) => async () => {
    try {
      await post("/api/phones/" + event.phone + "/messages", { tap: { message: event.key, choice } });
    } catch (error) {
      notice(event.phone, "not sent: " + error.message);
    }
  };
  const button = (item, choice) => {
    const b = element("button", { type: "button", "data-testid": "choice" }, item.title);
    if (item.description) b.append(element("small", {}, item.description));
    b.addEventListener("click", tap(choice, item.title));
    return b;
  };
  if (event.choices.list_button === null || event.choices.list_button === undefined) {
    event.choices.items.forEach((item, i) => box.append(button(item, i)));
    return box;
  }
  const listId = "list-" + event.key;
  const opener = element("button", {
    type: "button", "data-testid": "list-button", "aria-expanded": "false", "aria-controls": listId,
  }, "☰ " + (event.choices.list_button || "Choose"));
  const list = element("ul", { id: listId, "aria-label": event.choices.list_button || "Choices" });
  list.hidden = true;
  event.choices.items.forEach((item, i) => {
    const li = element("li");
    li.append(button(item, i));
    list.append(li);
  });
  opener.addEventListener("click", () => {
    list.hidden = !list.hidden;
    opener.setAttribute("aria-expanded", list.hidden ? "false" : "true");
    if (!list.hidden) list.querySelector("button").focus();
  });
  box.append(opener, list);
  return box;
}

const AUTHORS = { person: "You", agent: "Agent", human: "Helpdesk" };
const MARKS = { sent: "✓", delivered: "✓✓", read: "✓✓ read", undelivered: "! not delivered", failed: "! failed" };

function addMessage(event) {
  const phone = phones.get(event.phone);
  if (!phone) return;
  const bubble = element("div", {
    class: "bubble", "data-testid": "message", "data-author": event.author, "data-key": event.key,
  });
  bubble.append(element("span", { class: "who" }, AUTHORS[event.author] || event.author));
  if (event.tapped !== undefined) {
    bubble.append(element("span", { class: "body" }, event.tapped));
  } else if (event.location) {
    const place = event.location;
    const text = "Location: " + (place.label ? place.label + " " : "") + "(" + place.latitude + ", " + place.longitude + ")";
    bubble.append(element("span", { class: "place", "data-testid": "location" }, text));
  } else if (event.body) {
    bubble.append(element("span", { class: "body" }, event.body));
  }
  for (const url of event.media || []) {
    if (/^(https?:|\/)/.test(url)) {
      const picture = element("img", { src: url, alt: "A picture", "data-testid": "picture", loading: "lazy" });
      bubble.append(picture);
    } else {
      bubble.append(element("span", { class: "place" }, "[a picture]"));
    }
  }
  if (event.author !== "person" && event.status && MARKS[event.status]) {
    bubble.append(element("span", { class: "status", "aria-label": event.status, "data-testid": "status" }, MARKS[event.status]));
  }
  if (event.choices) bubble.append(choicesOf(event));
  phone.screen.append(bubble);
  if (event.author !== "person") setTyping(event.phone, false);
  scrollDown(phone.screen);
}

function addDeskEvent(event) {
  $("desk-off").hidden = true;
  const kind = event.kind === "desk" ? event.event.type : "desk-said";
  const text = event.kind === "desk" ? event.shown : "desk ◂ " + event.text;
  $("desk-log").append(element("li", { "data-testid": "desk-event", "data-type": kind }, text));
  if (event.kind === "desk" && event.event.conversation) {
    if (event.event.type === "handoff.ended") {
      if (deskConversation === event.event.conversation) deskConversation = null;
    } else {
      deskConversation = event.event.conversation;
    }
  }
  const open = deskConversation !== null;
  for (const id of ["desk-composer", "desk-end"]) $(id).disabled = !open;
  $("desk-compose").querySelector("[data-testid=desk-send]").disabled = !open;
  const log = $("desk-log");
  log.scrollTop = log.scrollHeight;
}

function apply(event) {
  switch (event.kind) {
    case "phone": addPhone(event); break;
    case "message": addMessage(event); break;
    case "typing": setTyping(event.phone, true); break;
    case "notice": notice(event.phone, event.text); break;
    case "desk": case "desk-said": addDeskEvent(event); break;
    default: break;
  }
}

async function poll() {
  for (;;) {
    try {
      const response = await fetch("/api/events?after=" + after);
      if (!response.ok) throw new Error("HTTP " + response.status);
      const answer = await response.json();
      if (answer.desk) $("desk-off").hidden = true;
      for (const event of answer.events) {
        after = Math.max(after, event.id);
        apply(event);
      }
    } catch (_) {
      // The phone's server restarts or is busy: look again in a moment.
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

async function sendFromCurrent(body) {
  if (current === null) return;
  const index = current;
  try {
    await post("/api/phones/" + index + "/messages", body);
  } catch (error) {
    notice(index, "not sent: " + error.message);
  }
}

function start() {
  $("picture-url").value = location.origin + "/media/pizza.svg";
  $("compose").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const composer = $("composer");
    const body = composer.value;
    if (!body.trim()) return;
    composer.value = "";
    sendFromCurrent({ text: { body } });
  });
  $("picture").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const media = $("picture-url").value.trim();
    if (media) sendFromCurrent({ text: { body: $("composer").value, media } });
    $("composer").value = "";
  });
  $("location").addEventListener("submit", (submit) => {
    submit.preventDefault();
    sendFromCurrent({ location: {
      latitude: Number($("latitude").value), longitude: Number($("longitude").value), label: $("place").value,
    } });
  });
  for (const channel of ["sms", "whatsapp"]) {
    $("add-" + channel).addEventListener("click", async () => {
      try { await post("/api/phones", { channel }); } catch (_) { /* shown by its absence */ }
    });
  }
  $("desk-compose").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const composer = $("desk-composer");
    const text = composer.value;
    if (!text.trim() || deskConversation === null) return;
    composer.value = "";
    try {
      await post("/api/desk/" + encodeURIComponent(deskConversation) + "/messages", { text });
    } catch (error) {
      $("desk-log").append(element("li", { "data-testid": "desk-event", "data-type": "error" }, "! " + error.message));
    }
  });
  $("desk-end").addEventListener("click", async () => {
    if (deskConversation === null) return;
    try {
      await post("/api/desk/" + encodeURIComponent(deskConversation) + "/end");
    } catch (error) {
      $("desk-log").append(element("li", { "data-testid": "desk-event", "data-type": "error" }, "! " + error.message));
    }
  });
  poll();
}

start();
