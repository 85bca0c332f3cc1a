// The demo client: a readable reference for PROTOCOL.md with standard WebRTC APIs only.
// Signaling is JSON-RPC 2.0 over the /ws WebSocket; media is one RTCPeerConnection per call:
// the client offers once with its own tracks, and answers every later server offer.

const $ = (id) => document.getElementById(id);

/** The signaling connection: requests return promises; notifications go to `onNotify`. */
class Signaling {
  constructor(url, onNotify) {
    this.ws = new WebSocket(url);
    this.nextId = 1;
    this.pending = new Map();
    this.onNotify = onNotify;
    this.opened = new Promise((resolve, reject) => {
      this.ws.onopen = resolve;
      this.ws.onerror = () => reject(new Error("cannot reach the server"));
    });
    this.ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      if (msg.id !== undefined && this.pending.has(msg.id)) {
        const { resolve, reject } = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        msg.error ? reject(Object.assign(new Error(msg.error.message), { code: msg.error.code })) : resolve(msg.result);
      } else if (msg.method) {
        this.onNotify(msg.method, msg.params);
      }
    };
    this.ws.onclose = () => this.onNotify("closed", {});
  }
  request(method, params = {}) {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }
}

const state = {
  sig: null,
  me: null,
  call: null, // { id, media, pc, local, incoming }
  iceServers: [], // TURN servers with this login's credentials (login's `ice_servers`)
  tiles: new Map(), // user -> { fig, video, meter, audio, videoBadge, quality, stream }
};

function status(text) {
  $("status").textContent = text;
}

function show(view) {
  for (const v of ["login-view", "idle-view", "call-view"]) $(v).hidden = v !== view;
}

// ---- login ----

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const user = $("user").value.trim();
  try {
    const r = await fetch(`/dev/token?user=${encodeURIComponent(user)}`);
    if (!r.ok) throw new Error(r.status === 404 ? "no dev token endpoint: start the server with --dev" : await r.text());
    const { token } = await r.json();
    const proto = location.protocol === "https:" ? "wss" : "ws";
    state.sig = new Signaling(`${proto}://${location.host}/ws`, onNotify);
    await state.sig.opened;
    const res = await state.sig.request("login", { token });
    state.me = res.user;
    state.iceServers = res.ice_servers || [];
    $("me").textContent = `logged in as ${state.me}`;
    show("idle-view");
    status("");
  } catch (err) {
    status(`Login failed: ${err.message}`);
  }
});

// ---- placing and answering ----

$("call-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const to = $("to").value.split(",").map((s) => s.trim()).filter(Boolean);
  const media = document.querySelector("input[name=media]:checked").value;
  try {
    const { call_id } = await state.sig.request("call", { to, media });
    state.call = { id: call_id, media, pc: null };
    enterCall();
    status(`Calling ${to.join(", ")}…`);
    await startMedia();
  } catch (err) {
    status(`Call failed: ${err.message}`);
    leaveCall();
  }
});

$("accept").addEventListener("click", async () => {
  $("incoming").close();
  const call = state.call;
  try {
    await state.sig.request("accept", { call_id: call.id });
    enterCall();
    status("");
    await startMedia();
  } catch (err) {
    status(`Accept failed: ${err.message}`);
    leaveCall();
  }
});

$("reject").addEventListener("click", async () => {
  $("incoming").close();
  const call = state.call;
  state.call = null;
  await state.sig.request("reject", { call_id: call.id }).catch(() => {});
  status("Call rejected");
});

// ---- media ----

async function startMedia() {
  const call = state.call;
  const video = call.media === "video";
  const local = await navigator.mediaDevices.getUserMedia({ audio: true, video });
  call.local = local;
  $("local-video").srcObject = local;
  await connectMedia();
}

// A new media session with the same local tracks: the first one, and again when the server
// asks (`reoffer`) or the session failed (`media_failed`).
async function connectMedia() {
  const call = state.call;
  const local = call.local;
  call.pc?.close();
  for (const t of state.tiles.values()) {
    if (t.stream) t.stream.getTracks().forEach((tr) => t.stream.removeTrack(tr));
  }
  // "Relay only" checks TURN: every path goes through the TURN servers from `login`.
  const relay = $("relay-only").checked;
  if (relay && state.iceServers.length === 0) status("Relay only, but the server hands out no TURN servers (--turn-url)");
  const pc = new RTCPeerConnection({ iceServers: state.iceServers, iceTransportPolicy: relay ? "relay" : "all" });
  call.pc = pc;
  for (const track of local.getTracks()) {
    const init = { direction: "sendonly", streams: [local] };
    // Video as two simulcast layers (lowest first): the server forwards each viewer the one
    // it asks for (the tile's high / low / off) and its downlink carries.
    if (track.kind === "video") {
      init.sendEncodings = [
        { rid: "l", scaleResolutionDownBy: 2, maxBitrate: 200_000 },
        { rid: "h", maxBitrate: 1_200_000 },
      ];
    }
    pc.addTransceiver(track, init);
  }
  pc.ontrack = (e) => {
    const user = e.streams[0]?.id;
    if (!user) return;
    const tile = tileFor(user);
    if (!tile.stream) {
      tile.stream = new MediaStream();
      tile.video.srcObject = tile.stream;
    }
    tile.stream.addTrack(e.track);
    e.track.onended = () => tile.stream.removeTrack(e.track);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  // Server offers that arrive before our offer's answer were for the session it replaces;
  // the flag drops only those (it is cleared as the answer arrives, before the next message).
  call.offering = true;
  let answer;
  try {
    answer = await state.sig.request("offer", { call_id: call.id, sdp: pc.localDescription.sdp });
  } finally {
    call.offering = false;
  }
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
}

function iceGathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => pc.iceGatheringState === "complete" && resolve();
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 1500); // the server learns our address from ICE checks anyway
  });
}

async function onServerOffer(sdp) {
  const pc = state.call?.pc;
  if (!pc || state.call.offering) return;
  await pc.setRemoteDescription({ type: "offer", sdp });
  await pc.setLocalDescription(await pc.createAnswer());
  await state.sig.request("answer", { call_id: state.call.id, sdp: pc.localDescription.sdp });
}

// ---- in-call controls ----

function toggle(button, on, labels) {
  button.classList.toggle("on", on);
  button.textContent = on ? labels[1] : labels[0];
}

$("mute-mic").addEventListener("click", async (e) => {
  const muted = !e.target.classList.contains("on");
  state.call.local?.getAudioTracks().forEach((t) => (t.enabled = !muted));
  await state.sig.request("mute", { call_id: state.call.id, audio: muted });
  toggle(e.target, muted, ["Mute mic", "Unmute mic"]);
});

$("mute-cam").addEventListener("click", async (e) => {
  const off = !e.target.classList.contains("on");
  state.call.local?.getVideoTracks().forEach((t) => (t.enabled = !off));
  await state.sig.request("mute", { call_id: state.call.id, video: off });
  toggle(e.target, off, ["Camera off", "Camera on"]);
});

$("hold").addEventListener("click", async (e) => {
  const held = !e.target.classList.contains("on");
  await state.sig.request("hold", { call_id: state.call.id, held });
  toggle(e.target, held, ["Hold", "Resume"]);
});

$("hangup").addEventListener("click", async () => {
  const call = state.call;
  if (!call) return;
  await state.sig.request("hangup", { call_id: call.id }).catch(() => {});
  leaveCall();
  status("Call ended");
});

$("invite-btn").addEventListener("click", async () => {
  const who = prompt("Invite (comma-separated users)");
  if (!who) return;
  const to = who.split(",").map((s) => s.trim()).filter(Boolean);
  await state.sig.request("invite", { call_id: state.call.id, to }).catch((err) => status(`Invite failed: ${err.message}`));
});

for (const d of "123A456B789C*0#D") {
  const b = document.createElement("button");
  b.textContent = d;
  b.addEventListener("click", () => state.sig.request("dtmf", { call_id: state.call.id, digits: d }));
  $("keypad").append(b);
}

$("message-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("message").value;
  if (!text) return;
  await state.sig.request("message", { call_id: state.call.id, text });
  addMessage(state.me, text);
  $("message").value = "";
});

function addMessage(user, text) {
  const li = document.createElement("li");
  li.textContent = `${user}: ${text}`;
  $("messages").append(li);
}

// ---- tiles ----

function tileFor(user) {
  let t = state.tiles.get(user);
  if (t) return t;
  const fig = document.createElement("figure");
  fig.className = "tile";
  fig.dataset.user = user;
  fig.innerHTML = `<video autoplay playsinline></video>
    <figcaption><span class="name"></span>
      <span class="meter" data-testid="meter-${user}"><div></div></span>
      <span class="badge audio" data-testid="audio-${user}">mic</span>
      <span class="badge video" data-testid="video-${user}">cam</span>
      <span class="badge quality" data-testid="quality-${user}"></span>
      <select class="view" data-testid="view-${user}" title="Which of their video you receive">
        <option value="high">high</option><option value="low">low</option><option value="off">off</option>
      </select></figcaption>`;
  fig.querySelector(".name").textContent = user;
  fig.querySelector("select.view").addEventListener("change", (e) => subscribe(user, e.target.value));
  $("tiles").append(fig);
  t = {
    fig,
    video: fig.querySelector("video"),
    meter: fig.querySelector(".meter > div"),
    audio: fig.querySelector(".badge.audio"),
    videoBadge: fig.querySelector(".badge.video"),
    quality: fig.querySelector(".badge.quality"),
    stream: null,
  };
  state.tiles.set(user, t);
  return t;
}

// TRTC's startRemoteView big / small stream, or stopRemoteView: kept by the server for the call.
async function subscribe(user, video) {
  const call = state.call;
  if (!call) return;
  const select = state.tiles.get(user)?.fig.querySelector("select.view");
  if (select) select.value = video;
  await state.sig.request("subscribe", { call_id: call.id, user, video });
}

function removeTile(user) {
  state.tiles.get(user)?.fig.remove();
  state.tiles.delete(user);
}

// ---- call lifecycle ----

function enterCall() {
  show("call-view");
}

function leaveCall() {
  const call = state.call;
  state.call = null;
  call?.pc?.close();
  call?.local?.getTracks().forEach((t) => t.stop());
  $("local-video").srcObject = null;
  for (const user of [...state.tiles.keys()]) removeTile(user);
  for (const [id, labels] of [["mute-mic", ["Mute mic"]], ["mute-cam", ["Camera off"]], ["hold", ["Hold"]]]) {
    $(id).classList.remove("on");
    $(id).textContent = labels[0];
  }
  $("my-quality").textContent = "";
  $("incoming").open && $("incoming").close();
  show(state.me ? "idle-view" : "login-view");
}

const endMessages = {
  hangup: "The call ended",
  rejected: "Rejected",
  busy: "Busy",
  no_response: "No answer",
  cancelled: "Cancelled",
  timeout: "The call timed out",
  disconnected: "The other side was disconnected",
  error: "The call ended with an error",
};

function onNotify(method, p) {
  const call = state.call;
  switch (method) {
    case "invited":
      if (call) return; // one call at a time in this demo
      state.call = { id: p.call_id, media: p.media, pc: null, incoming: true };
      $("incoming-from").textContent = p.from;
      $("incoming-media").textContent = p.media + (p.group ? ", group" : "");
      $("incoming").showModal();
      break;
    case "cancelled":
    case "invite_timeout":
      if (call?.id === p.call_id) {
        leaveCall();
        status(method === "cancelled" ? "The caller cancelled" : "Missed call");
      }
      break;
    case "accepted":
      status(`${p.user} answered`);
      break;
    case "rejected":
      status(`${p.user} rejected the call`);
      break;
    case "busy":
      status(`${p.user} is busy`);
      break;
    case "no_response":
      status(`${p.user} did not answer`);
      break;
    case "user_enter":
      tileFor(p.user);
      break;
    case "user_leave":
      removeTile(p.user);
      status(`${p.user} left`);
      break;
    case "call_end":
      if (call?.id === p.call_id) {
        leaveCall();
        status(endMessages[p.reason] || `Call ended (${p.reason})`);
      }
      break;
    case "offer":
      onServerOffer(p.sdp).catch((err) => status(`Renegotiation failed: ${err.message}`));
      break;
    case "reoffer":
    case "media_failed":
      if (call?.id === p.call_id && call.local) {
        connectMedia().catch((err) => status(`Media restart failed: ${err.message}`));
      }
      break;
    case "volume": {
      const levels = new Map(p.volumes.map((v) => [v.user, v.volume]));
      for (const [user, t] of state.tiles) t.meter.style.width = `${levels.get(user) || 0}%`;
      break;
    }
    case "audio_available":
    case "video_available": {
      const t = tileFor(p.user);
      const badge = method === "audio_available" ? t.audio : t.videoBadge;
      badge.classList.toggle("off", !p.available);
      badge.classList.toggle("ok", p.available);
      break;
    }
    case "quality": {
      const badge = p.user === state.me ? $("my-quality") : tileFor(p.user).quality;
      if (p.user === state.me && p.direction !== "down") break;
      if (p.user !== state.me && p.direction !== "up") break;
      badge.textContent = `MOS ${p.mos.toFixed(2)} ${p.quality}`;
      badge.className = `badge quality ${p.quality}`;
      break;
    }
    case "dtmf":
      addMessage(p.user, `DTMF ${p.digits}`);
      break;
    case "message":
      addMessage(p.user, p.text);
      break;
    case "session_replaced":
      status("You logged in somewhere else");
      break;
    case "closed":
      if (state.call) leaveCall();
      state.me = null;
      show("login-view");
      status("Disconnected from the server");
      break;
  }
}

// For tests and the curious: the live RTCPeerConnection stats.
window.sfuDemo = {
  state: () => ({ me: state.me, inCall: !!state.call, users: [...state.tiles.keys()] }),
  inboundBytes: async () => {
    const out = { audio: 0, video: 0 };
    const pc = state.call?.pc;
    if (!pc) return out;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp") out[s.kind] += s.bytesReceived || 0;
    });
    return out;
  },
  // The selected path: our candidate's type (host, srflx, prflx, relay) and the transport to
  // the server (udp, tcp).
  path: async () => {
    const pc = state.call?.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return { local: local?.candidateType, remote: remote?.candidateType, protocol: remote?.protocol, relayProtocol: local?.relayProtocol };
  },
  meter: (user) => parseFloat(state.tiles.get(user)?.meter.style.width || "0"),
  subscribe: (user, video) => subscribe(user, video),
  // `user`'s video as received: its width now and bytes so far (the server names a forwarded
  // track `<user>-video`).
  videoFrom: async (user) => {
    const pc = state.call?.pc;
    const out = { width: 0, bytes: 0 };
    if (!pc) return out;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video" && s.trackIdentifier === `${user}-video`) {
        out.width = s.frameWidth || 0;
        out.bytes = s.bytesReceived || 0;
      }
    });
    return out;
  },
};
