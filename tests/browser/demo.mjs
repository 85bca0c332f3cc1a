// Drives the demo page served by a running sfu in headless Chromium (fake camera and mic):
// a 1v1 audio+video call between two browser contexts and a group call of three. Asserts,
// through RTCPeerConnection.getStats(), that inbound audio and video bytes grow on every side,
// that the speaking peers' volume meters move, that quality badges appear, and that hanging
// up returns every page to idle. Saves a screenshot of an active call. In the group call alice
// publishes simulcast and carol picks low, off, then high again for her video (frame widths).
//
// MODE `tcp` or `relay` runs a 1v1 video call only and checks the path it took (getStats's
// selected candidate pair): over TCP to the server (the test drops UDP to it), or from a
// TURN relay candidate (both pages tick "relay only").
//
// Usage: node demo.mjs http://127.0.0.1:PORT ARTIFACT_DIR [all|tcp|relay]

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, artifacts, mode = "all"] = process.argv.slice(2);
if (!base || !artifacts) {
  console.error("usage: node demo.mjs BASE_URL ARTIFACT_DIR");
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
  ],
});

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

async function until(what, fn, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

async function open(user) {
  const context = await browser.newContext({ permissions: ["camera", "microphone"] });
  const page = await context.newPage();
  page.on("console", (m) => m.type() === "error" && console.log(`[${user} console] ${m.text()}`));
  page.on("pageerror", (e) => console.log(`[${user} pageerror] ${e.message}`));
  await page.goto(base);
  await page.fill("#user", user);
  await page.click("#login-form button[type=submit]");
  await until(`${user} logged in`, () => page.evaluate(() => window.sfuDemo.state().me));
  return { user, page, context };
}

async function call(from, to, media) {
  await from.page.fill("#to", to.map((t) => t.user).join(", "));
  await from.page.check(`input[name=media][value=${media}]`);
  await from.page.click("#call-form button[type=submit]");
  for (const callee of to) {
    await callee.page.waitForSelector("dialog#incoming[open]", { timeout: 15000 });
    await callee.page.click("#accept");
  }
}

async function inbound(p) {
  return p.page.evaluate(() => window.sfuDemo.inboundBytes());
}

/** Every page receives audio (and video) that keeps growing, from every other member. */
async function mediaFlows(members, video) {
  const first = [];
  for (const m of members) {
    first.push(
      await until(`${m.user} receives media`, async () => {
        const b = await inbound(m);
        return b.audio > 0 && (!video || b.video > 0) ? b : null;
      }),
    );
  }
  await new Promise((r) => setTimeout(r, 3000));
  for (const [i, m] of members.entries()) {
    const later = await inbound(m);
    check(later.audio > first[i].audio, `${m.user}: inbound audio bytes grow (${first[i].audio} -> ${later.audio})`);
    if (video) check(later.video > first[i].video, `${m.user}: inbound video bytes grow (${first[i].video} -> ${later.video})`);
    const users = (await m.page.evaluate(() => window.sfuDemo.state())).users;
    for (const other of members.filter((o) => o !== m)) {
      check(users.includes(other.user), `${m.user} has a tile for ${other.user}`);
    }
  }
}

async function metersMove(members) {
  for (const m of members) {
    for (const other of members.filter((o) => o !== m)) {
      await until(`${m.user} sees ${other.user}'s volume meter move`, () =>
        m.page.evaluate((u) => window.sfuDemo.meter(u) > 0, other.user),
      );
      check(true, `${m.user}: volume meter of ${other.user} moved`);
    }
  }
}

async function qualityBadges(members) {
  for (const m of members) {
    for (const other of members.filter((o) => o !== m)) {
      const text = await until(`${m.user} gets a quality badge for ${other.user}`, () =>
        m.page.evaluate((u) => document.querySelector(`[data-testid=quality-${u}]`)?.textContent || "", other.user),
      );
      check(/MOS \d\.\d\d (excellent|good|fair|poor|bad)/.test(text), `${m.user}: quality badge for ${other.user}: "${text}"`);
    }
  }
}

const videoFrom = (m, user) => m.page.evaluate((u) => window.sfuDemo.videoFrom(u), user);

/** alice publishes simulcast: bob keeps high, carol asks for low, then off, then high again. */
async function simulcastChoices(alice, bob, carol) {
  const high = await until("bob receives alice's high layer", async () => {
    const v = await videoFrom(bob, "alice");
    return v.width >= 600 ? v : null;
  });
  check(true, `bob: alice's video ${high.width} px wide (high, the default)`);
  await carol.page.evaluate(() => window.sfuDemo.subscribe("alice", "low"));
  const low = await until("carol receives alice's low layer", async () => {
    const v = await videoFrom(carol, "alice");
    return v.width > 0 && v.width <= high.width / 2 ? v : null;
  });
  check(true, `carol: alice's video ${low.width} px wide after subscribe low`);
  check((await videoFrom(bob, "alice")).width >= 600, "bob still gets the high layer");
  await carol.page.evaluate(() => window.sfuDemo.subscribe("alice", "off"));
  await new Promise((r) => setTimeout(r, 1500));
  const off1 = await videoFrom(carol, "alice");
  await new Promise((r) => setTimeout(r, 2000));
  const off2 = await videoFrom(carol, "alice");
  check(off2.bytes === off1.bytes, `carol: no video of alice while off (${off1.bytes} -> ${off2.bytes} bytes)`);
  await carol.page.evaluate(() => window.sfuDemo.subscribe("alice", "high"));
  const back = await until("carol receives alice's high layer again", async () => {
    const v = await videoFrom(carol, "alice");
    return v.width >= 600 && v.bytes > off2.bytes ? v : null;
  });
  check(true, `carol: alice's video ${back.width} px wide after subscribe high`);
}

async function allIdle(members) {
  for (const m of members) {
    await until(`${m.user} back to idle`, () =>
      m.page.evaluate(() => !window.sfuDemo.state().inCall && !document.querySelector("#idle-view").hidden),
    );
    check(true, `${m.user}: back to idle`);
  }
}

/** The selected ICE path of every member satisfies `want`. */
async function pathIs(members, what, want) {
  for (const m of members) {
    const p = await until(`${m.user} has a selected path`, () => m.page.evaluate(() => window.sfuDemo.path()));
    check(want(p), `${m.user}: media path is ${what}: ${JSON.stringify(p)}`);
  }
}

async function network(mode) {
  const alice = await open("alice");
  const bob = await open("bob");
  if (mode === "relay") for (const m of [alice, bob]) await m.page.check("#relay-only");
  await call(alice, [bob], "video");
  await mediaFlows([alice, bob], true);
  if (mode === "tcp") await pathIs([alice, bob], "ICE-TCP", (p) => p.protocol === "tcp");
  else await pathIs([alice, bob], "a TURN relay", (p) => p.local === "relay");
  await alice.page.screenshot({ path: `${artifacts}/call-${mode}.png`, fullPage: true });
  await alice.page.click("#hangup");
  await allIdle([alice, bob]);
}

async function everything() {
  // 1v1 audio + video.
  const alice = await open("alice");
  const bob = await open("bob");
  await call(alice, [bob], "video");
  await mediaFlows([alice, bob], true);
  await metersMove([alice, bob]);
  await qualityBadges([alice, bob]);
  await alice.page.screenshot({ path: `${artifacts}/call-1v1.png`, fullPage: true });
  check(true, `screenshot saved to ${artifacts}/call-1v1.png`);
  await alice.page.click("#hangup");
  await allIdle([alice, bob]);
  const status = await bob.page.textContent("#status");
  check(/ended|left/i.test(status), `bob is told the call ended ("${status}")`);

  // Group of three.
  const carol = await open("carol");
  await call(alice, [bob, carol], "video");
  await mediaFlows([alice, bob, carol], true);
  await metersMove([alice, bob, carol]);
  await alice.page.screenshot({ path: `${artifacts}/call-group.png`, fullPage: true });
  await simulcastChoices(alice, bob, carol);
  for (const m of [alice, bob, carol]) await m.page.click("#hangup").catch(() => {});
  await allIdle([alice, bob, carol]);
}

try {
  if (mode === "all") await everything();
  else await network(mode);
  console.log("all browser checks passed");
} catch (err) {
  console.error(`FAILED: ${err.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
