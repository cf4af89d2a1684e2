// The stoat_ferret dashboard: plain JavaScript, no build step, no third-party code.
// It talks only to the API of the server that served it:
//   - every job is followed live on one EventSource (/api/v1/events), which
//     resumes by itself after a dropped connection or a restart;
//   - /health is read every few seconds for the header (an answer older than
//     one shown is dropped), and a change in its "submitted" counter (a scan
//     started elsewhere) reloads the job list, as does a load of it that failed;
//   - the library table is reloaded whenever a scan or a thumbnails job ends;
//     its search, sort, page and open video are kept in the address (changed
//     in place: Back and Forward show the view of the address they come to);
//   - /health is not read while the tab is hidden.
// Every text that comes from the server (paths, error messages) goes into the
// page as textContent, never as HTML, and through untrusted(): in an element
// of its own that the bidi algorithm isolates (a file name's U+202E cannot
// turn the text after it around), with its control and invisible formatting
// characters spelled out (⟨U+202E⟩, ⟨U+000A⟩), so that a name cannot hide one.
// Names may still look alike in other ways (NFC against NFD, look-alike
// letters, the emoji joiners and presentation selectors kept below). What is
// sent back (the scan form's path) is left as typed.
//
// With STOAT_API_TOKEN set, an answer 401 shows the sign-in form, which trades
// the token for an HttpOnly cookie (POST /api/v1/session) that the API and
// EventSource use. The token is never put in the address: a browser keeps
// every address it opened, fragment included, in its history.

const API = "/api/v1";
const NEEDS_TOKEN = "This service needs its access token: sign in above.";
const JOB_PAGE = 20;
let olderFrom = 0; // how many jobs were shown when "Show older jobs" was pressed
// The most jobs the API lists in one answer (MAX_LIMIT in api/_schemas.py):
// "Show older jobs" stops there, and the count says how many more there are.
const JOBS_SHOWN_MAX = 1000;
const VIDEO_PAGE = 20;
// A browser opens about 6 connections per host across all its tabs: one
// event stream per page, whatever the number of jobs, leaves the rest free.
// A stream the browser gave up on (a 503 while stopping, a 401) is opened
// again after RECONNECT_MS, doubling after each failure in a row up to
// RECONNECT_MAX_MS (an EventSource cannot read Retry-After), with jitter so
// that many pages do not come back at the same moment.
const RECONNECT_MS = 2000;
const RECONNECT_MAX_MS = 60000;
const HEALTH_EVERY_MS = 5000;
// A job list not answered by then is waiting for a connection, most likely:
// a browser keeps 6 at most to one server, and each dashboard tab holds one.
const JOBS_SLOW_MS = 10000;
const JOBS_SLOW =
  "Still waiting for the service. A browser keeps at most 6 connections to one server, " +
  "and each open tab of this dashboard holds one: if several are open, close one.";
const TERMINAL = new Set(["completed", "failed", "timeout", "cancelled"]);
// The counts of a completed job's result shown under it, by job type.
const SCAN_COUNTS = ["found", "added", "updated", "unchanged", "failed_unchanged", "removed"];
const THUMBNAILS_COUNTS = ["videos", "made", "failed", "unchanged", "outside", "removed"];

const byId = (id) => document.getElementById(id);

/** A new element: `props` are attributes, except `class` and `text`. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children);
  return node;
}

// ------------------------------------------------------------ untrusted text

// The characters a name shows nothing of, or that reorder or break the text
// around them: C0 and C1 controls (newline and tab too), the bidi marks,
// embeddings, overrides and isolates (U+061C, U+200E/F, U+202A-E, U+2066-9),
// the line and paragraph separators, zero-width space, word joiner and the
// invisible operators, the byte-order mark, the soft hyphen, the combining
// grapheme joiner, the Hangul and Khmer fillers, the Mongolian selectors and
// vowel separator, the variation selectors but the emoji's two (U+FE0E/F),
// the interlinear annotation marks and the unassigned specials before them
// (U+FFF0-8), the shorthand format controls, the musical format controls and
// the whole tag and variation selector plane block U+E0000-E0FFF (but in a
// flag of a subdivision, 🏴 then its tags, kept whole by the first
// alternative): every default-ignorable code point, which a browser draws
// as nothing. ZWJ and ZWNJ (U+200C/D) and U+FE0E/F are kept: scripts and
// emoji need them. Spelled out too: the object replacement character
// (U+FFFC), which Chromium also draws as nothing, the Braille blank (U+2800),
// drawn as a space, and the signs that look like a path's "/" (Unicode's
// confusables of U+002F that are not letters: U+1735, U+2041, U+2044,
// U+2215, U+2571, U+27CB, U+29F8, U+2F03, U+31D3, U+FF0F, U+1D23A):
// "fake∕dir∕clip.mp4" would read as a file two folders down. After four
// combining marks in a row (the first alternative: five or more; no
// lookbehind, which Safari before 16.4 cannot parse), the rest are one mark,
// "⟨+116 marks⟩": a long stack is drawn across the rows above and below
// (Vietnamese needs two on a letter; Hebrew's points and cantillation mostly
// up to four: a rare fifth shows as its code point).
const INVISIBLE =
  /\p{M}{5,}|\u{1F3F4}[\u{E0030}-\u{E0039}\u{E0061}-\u{E007A}]{1,6}\u{E007F}|[\u0000-\u001f\u007f-\u009f\u00ad\u034f\u061c\u115f\u1160\u1735\u17b4\u17b5\u180b-\u180f\u200b\u200e\u200f\u2028-\u202e\u2041\u2044\u2060-\u206f\u2215\u2571\u27cb\u2800\u29f8\u2f03\u31d3\u3164\ufe00-\ufe0d\ufeff\uff0f\uffa0\ufff0-\ufffc\u{1bca0}-\u{1bca3}\u{1d173}-\u{1d17a}\u{1d23a}\u{e0000}-\u{e0fff}]/gu;
const MARK_RUN = /^\p{M}/u;

/** A character as it is spelled out: ⟨U+202E⟩. */
function codePoint(char) {
  return `⟨U+${char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}⟩`;
}

/**
 * What of `text` is spelled out, in order, as [index, characters, shown]: its
 * INVISIBLE characters (a subdivision's flag among them, shown null: as it
 * is), each run of combining marks past the fourth, and each white space
 * character at either of its ends (a name " clip.mp4" or a folder "videos "
 * would look like another's). The ends are found by trimming (the same white
 * space as \s, each one UTF-16 unit), not by a lookaround, which is quadratic
 * on a long run of spaces.
 */
function marks(text) {
  const start = text.length - text.trimStart().length;
  const end = Math.max(start, text.trimEnd().length);
  const found = [];
  for (let index = 0; index < start; index++) found.push([index, text[index], codePoint(text[index])]);
  for (const match of text.slice(start, end).matchAll(INVISIBLE)) {
    const at = start + match.index;
    const points = [...match[0]];
    if (points.length === 1) {
      found.push([at, match[0], codePoint(match[0])]);
    } else if (!MARK_RUN.test(match[0])) {
      found.push([at, match[0], null]); // a subdivision's flag
    } else {
      // A run of marks: the first four shown (any invisible among them spelled), the rest counted.
      const kept = points.slice(0, 4).join("");
      for (const inner of kept.matchAll(INVISIBLE)) found.push([at + inner.index, inner[0], codePoint(inner[0])]);
      const rest = match[0].slice(kept.length);
      found.push([at + kept.length, rest, points.length > 5 ? `⟨+${points.length - 4} marks⟩` : codePoint(rest)]);
    }
  }
  for (let index = end; index < text.length; index++) found.push([index, text[index], codePoint(text[index])]);
  return found;
}

/** `text` for an attribute (an accessible name, alt text): invisible characters spelled out. */
function spelled(value) {
  const text = String(value);
  let shown = "";
  let from = 0;
  for (const [index, chars, spell] of marks(text)) {
    shown += text.slice(from, index) + (spell ?? chars);
    from = index + chars.length;
  }
  return shown + text.slice(from);
}

/** `text` as nodes: each invisible character a marked ⟨U+…⟩, so a name cannot spell one itself. */
function spelledNodes(value) {
  const text = String(value);
  const nodes = [];
  let from = 0;
  for (const [index, chars, spell] of marks(text)) {
    if (spell === null) continue; // a subdivision's flag: shown as it is
    if (index > from) nodes.push(text.slice(from, index));
    nodes.push(el("span", { class: "control", text: spell }));
    from = index + chars.length;
  }
  if (from < text.length) nodes.push(text.slice(from));
  return nodes;
}

/**
 * A text from the server (or the address) in an element of its own, isolated
 * from the text around it, its invisible characters spelled out. Paths take
 * { dir: "ltr" }, and each of their components is isolated too, in a <bdi>
 * of its own direction: two right-to-left folder names side by side would
 * otherwise read as one run, their order reversed. Other text finds its own
 * direction (a <bdi>'s dir=auto).
 */
function untrusted(text, props = {}, tag = "bdi") {
  const cls = props.class ? `untrusted ${props.class}` : "untrusted";
  const nodes = props.dir === "ltr" ? pathNodes(text) : spelledNodes(text);
  return el(tag, { ...props, class: cls }, ...nodes);
}

/** A path as nodes, for an untrusted element of direction ltr: each component in a <bdi>. */
function pathNodes(text) {
  return String(text)
    .split("/")
    .flatMap((part, index) => [...(index ? ["/"] : []), ...(part ? [el("bdi", {}, ...spelledNodes(part))] : [])]);
}

/** The service's "/a, /b" list of folders: each path on its own (a lookahead: no lookbehind). */
function rootList(text) {
  return text
    .split(/, (?=\/)/)
    .flatMap((root, index) => [...(index ? [", "] : []), untrusted(root, { dir: "ltr" })]);
}

// ---------------------------------------------------------------- formatting

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A video's length as a clock: 0:00.40, 3:07.00, 1:02:03. Rounded to the
 * hundredth first, then split: 59.997 s is 1:00.00, not 0:60.00. */
function formatClock(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const hundredths = Math.round(seconds * 100);
  const whole = Math.floor(hundredths / 100);
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  if (hours > 0) {
    return `${hours}:${String(minutes).padStart(2, "0")}:${String(whole % 60).padStart(2, "0")}`;
  }
  return `${minutes}:${((hundredths % 6000) / 100).toFixed(2).padStart(5, "0")}`;
}

/** How long something took: 0.42 s, 12.3 s, 4 min 05 s, 2 h 03 min. */
function formatElapsed(ms) {
  if (!Number.isFinite(ms) || ms < 0) return "—";
  const seconds = ms / 1000;
  // Each bound is where the rounding shown would reach the next form: 59.96 s is 1 min 00 s.
  if (seconds < 9.995) return `${seconds.toFixed(2)} s`;
  if (seconds < 59.95) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, "0")} s`;
  return `${Math.floor(whole / 3600)} h ${String(Math.floor((whole % 3600) / 60)).padStart(2, "0")} min`;
}

function formatRate(numerator, denominator) {
  if (!numerator || !denominator) return "—";
  return `${Number((numerator / denominator).toFixed(3))} fps`;
}

function formatResolution(width, height) {
  return width && height ? `${width}×${height}` : "—";
}

/** The list's size of a video as it is shown (rotation and pixel shape
 * applied), its coded size under it where that differs (the column sorts by that). */
function resolutionCell(video) {
  const coded = formatResolution(video.width, video.height);
  const shown = formatResolution(video.display_width, video.display_height);
  if (shown === "—" || shown === coded) return el("td", { text: coded });
  return el("td", {}, shown, el("small", { class: "coded" }, `coded ${coded}`));
}

function timeElement(iso) {
  if (!iso) return el("span", { text: "—" });
  const moment = new Date(iso);
  return el("time", { datetime: iso, title: iso }, moment.toLocaleString());
}

// ------------------------------------------------------------------ requests

/** One JSON request; throws only when the service cannot be reached. */
async function request(method, url, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { status: response.status, ok: response.ok, data, headers: response.headers };
}

/** The API's `detail` as one sentence (a 422 carries a list of problems). */
function detailText(data) {
  const detail = data && data.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((problem) => String(problem.msg || "invalid value").replace(/^Value error, /, ""))
      .join("; ");
  }
  return "";
}

/** "Could not <what> (403): <the API's detail>." for an answer that is no success. */
function couldNot(what, response) {
  const detail = detailText(response.data);
  return `Could not ${what} (${response.status})${detail ? `: ${spelled(detail)}` : ""}.`;
}

/** Seconds to wait from a Retry-After header (seconds or an HTTP date). */
function retryAfterSeconds(headers) {
  const value = headers.get("Retry-After");
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(1, Math.ceil((when - Date.now()) / 1000));
}

/** The starts of the service's 403s for a folder outside the ones it may scan, and one it may not read. */
const OUTSIDE = "the path is outside the directories this service may scan";
const DENIED = "permission denied";

/** What to tell the user when a scan request is refused: text and isolated nodes. */
function explainRefusal(response, path) {
  const detail = detailText(response.data);
  const quoted = () => ["“", untrusted(path, { dir: "ltr" }), "”"];
  switch (response.status) {
    case 401:
      return [needToken()];
    case 400:
      if (detail.startsWith("not a directory")) {
        return [...quoted(), " is a file, not a folder. Enter the folder that holds the videos."];
      }
      return [...quoted(), " cannot be scanned: ", detail ? untrusted(detail) : "it is not a usable folder", "."];
    case 403: {
      if (detail.startsWith(`${DENIED}: `)) {
        return ["The service is not allowed to read ", ...quoted(), " (permission denied)."];
      }
      if (!detail.startsWith(OUTSIDE)) {  // the request guard's, or a proxy's
        return ["The service refused the request", ...(detail ? [": ", untrusted(detail)] : []), "."];
      }
      // The service names its folders after its sentence: "... (a, b)".
      const rest = detail.slice(OUTSIDE.length);
      const roots = rest.startsWith(" (") && rest.endsWith(")") ? rest.slice(2, -1) : "";
      return [
        ...quoted(),
        " is outside the folders this service may scan",
        // Each its own path: as one text, "/a, /b" would hold a folder "a, ".
        ...(roots ? [": ", ...rootList(roots)] : []),
        ". Choose a folder inside them, or ask whoever runs the service to add it to STOAT_SCAN_ROOTS.",
      ];
    }
    case 404:
      return [
        "There is no folder at ",
        ...quoted(),
        ". Check the spelling. If it was deleted, its videos leave the library when a folder above it",
        " is scanned with “Include subfolders” ticked (and, for a disk no longer plugged in,",
        " “Remove the videos of disks not mounted or replaced”).",
      ];
    case 413:
      return ["That request is too large to send."];
    case 422:
      return ["That path cannot be used: ", detail ? untrusted(detail) : "the request was not understood", "."];
    case 503: {
      const wait = retryAfterSeconds(response.headers);
      const reason = detail ? [" (", untrusted(detail), ")"] : [];
      const again = wait === null ? "Try again shortly." : `Try again in ${wait} s.`;
      return ["The service cannot start a scan right now", ...reason, `. ${again}`];
    }
    default:
      return [`The service answered ${response.status}`, ...(detail ? [": ", untrusted(detail)] : []), "."];
  }
}

// ------------------------------------------------------------------ job titles

/**
 * A job's title from what the server says it works on (its payload), whoever
 * started it: the path and the page's own flags apart, so that a folder named
 * "x (forgetting disks not mounted)", or one ending in U+202E, can neither pass
 * for a flag nor turn one around. `text` is the title as one string, for the
 * accessible names and announcements.
 */
function jobTitle(job) {
  const payload = job.payload;
  if (job.job_type === "scan" && payload && typeof payload.path === "string") {
    const flags = [];
    if (payload.recursive === false) flags.push(["depth", "(this folder only)"]);
    if (payload.forget_unmounted === true) flags.push(["forget", "(forgetting disks not mounted)"]);
    // The flags come before the path, which ends the title: a name that ends
    // like a flag is heard, and read, as a part of the path.
    const text = ["Scan", ...flags.map(([, flag]) => flag), "of", spelled(payload.path)].join(" ");
    return { lead: "Scan", path: payload.path, flags, text };
  }
  const text = `${job.job_type === "scan" ? "Scan" : spelled(job.job_type)} job ${job.job_id.slice(0, 8)}`;
  return { lead: text, path: null, flags: [], text };
}

/** The nodes of a job's title: each flag an element of its own, then the path, isolated. */
function jobTitleNodes(title) {
  if (title.path === null) return [title.lead];
  return [
    title.lead,
    ...title.flags.flatMap(([kind, flag]) => [" ", el("span", { class: `job-flag ${kind}`, text: flag })]),
    " of ",
    untrusted(title.path, { dir: "ltr", class: "path" }),
  ];
}

// ---------------------------------------------------------------------- jobs

const views = new Map(); // job id -> JobView, for the jobs on the page
let jobLimit = JOB_PAGE;
let jobsLoaded = false;

/** One job on the page; update() redraws only what changed, so focus stays put. */
class JobView {
  /** `fresh`: newer than every job the list showed before (not one paged in from older ones). */
  constructor(job, fresh = true) {
    this.id = job.job_id;
    this.fresh = fresh;
    this.job = null;
    this.eventAt = 0; // eventCount when the event stream last updated it
    const titleId = `job-${this.id}-title`;
    this.title = el("h3", { class: "job-title", id: titleId, tabindex: "-1" });
    this.badge = el("span", { class: "badge" });
    this.cancelButton = el("button", { type: "button", class: "danger" }, "Cancel");
    this.cancelButton.addEventListener("click", () => cancelJob(this));
    this.progress = el("progress", { max: "1" });
    this.message = el("span", { class: "job-message" });
    this.times = el("dl", { class: "facts times" });
    this.error = el("p", { class: "job-error", hidden: true });
    this.summary = el("div", { class: "summary-wrap" });
    this.note = el("p", { class: "job-note", role: "status" });
    this.root = el(
      "li",
      { class: "job", "data-job-id": this.id },
      el(
        "article",
        { "aria-labelledby": titleId },
        el("div", { class: "job-head" }, this.title, this.badge, this.cancelButton),
        el("div", { class: "job-progress" }, this.progress, this.message),
        this.times,
        this.error,
        this.summary,
        this.note,
      ),
    );
    this.update(job);
  }

  get status() {
    return this.job ? this.job.status : null;
  }

  update(job) {
    const before = this.job;
    // A job never leaves a finished state: news of it running, on its way
    // when a list load or a cancel's answer said it ended, is older news.
    if (before && TERMINAL.has(before.status) && !TERMINAL.has(job.status)) return;
    this.job = job;
    const title = jobTitle(job);
    // Compared part by part: as text, a folder named "x (this folder only)" reads as x with the flag.
    const titleKey = JSON.stringify([title.lead, title.path, title.flags]);
    if (this.titleKey !== titleKey) {
      this.titleKey = titleKey;
      this.title.replaceChildren(...jobTitleNodes(title));
      this.progress.setAttribute("aria-label", `Progress of ${title.text}`);
      this.cancelButton.setAttribute("aria-label", `Cancel ${title.text}`);
    }
    this.renderProgress(job);
    if (before && before.status === job.status) return;

    // The status changed (or this is the first view of the job).
    const ended = TERMINAL.has(job.status);
    this.root.dataset.status = job.status;
    this.badge.dataset.state = job.status;
    this.badge.textContent = job.status;
    if (ended && this.cancelButton === document.activeElement) this.title.focus();
    this.cancelButton.hidden = ended;
    this.renderTimes(job);
    this.renderOutcome(job);
    if (before) {
      announce(`${title.text}: ${job.status}.`);
      onStatusChange(job);
    } else if (jobsLoaded && this.fresh) {
      // A new job: the header's counts change too; one that started and
      // ended between two looks at the list changes the library as well.
      if (ended) onStatusChange(job);
      else healthSoon();
    }
  }

  renderProgress(job) {
    // The server's message, isolated; the page's own words and figure around it.
    const message = job.message || "";
    let text = "";
    if (job.status === "completed") {
      this.progress.value = 1;
    } else if (typeof job.progress === "number") {
      this.progress.value = job.progress;
    } else if (TERMINAL.has(job.status)) {
      this.progress.value = 0;
    } else {
      this.progress.removeAttribute("value"); // indeterminate: no figure yet
      if (!message) text = job.status === "pending" ? "waiting for a free worker" : "starting";
    }
    if (this.progress.hasAttribute("value")) {
      text = `${Math.floor(this.progress.value * 100)} %${message ? " · " : ""}`;
    }
    const key = JSON.stringify([text, message]);
    if (this.messageKey === key) return;
    this.messageKey = key;
    this.message.replaceChildren(text, ...(message ? [untrusted(message)] : []));
  }

  renderTimes(job) {
    const facts = [
      ["Submitted", timeElement(job.submitted_at)],
      ["Started", timeElement(job.started_at)],
      ["Finished", timeElement(job.finished_at)],
    ];
    if (job.started_at && job.finished_at) {
      const took = Date.parse(job.finished_at) - Date.parse(job.started_at);
      facts.push(["Duration", el("span", { text: formatElapsed(took) })]);
    }
    this.times.replaceChildren(
      ...facts.map(([term, value]) => el("div", {}, el("dt", { text: term }), el("dd", {}, value))),
    );
  }

  renderOutcome(job) {
    this.error.hidden = !job.error;
    this.error.replaceChildren(
      ...(job.error ? [`${job.status === "failed" ? "Error" : "Reason"}: `, untrusted(job.error)] : []),
    );
    const result = job.result;
    if (job.status !== "completed" || !result || typeof result !== "object") {
      this.summary.replaceChildren();
      return;
    }
    const thumbnails = job.job_type === "thumbnails";
    const counts = (thumbnails ? THUMBNAILS_COUNTS : SCAN_COUNTS)
      .filter((key) => typeof result[key] === "number")
      .map((key) => el("div", {}, el("dt", { text: key }), el("dd", { text: String(result[key]) })));
    const label = thumbnails ? "Thumbnails summary" : "Scan summary";
    const parts = [el("dl", { class: "facts summary", "aria-label": label }, ...counts)];
    const errors = Array.isArray(result.errors) ? result.errors : [];
    const more = Number(result.errors_truncated) || 0;
    if (errors.length || more) {
      const items = errors.map((entry) =>
        el("li", {}, untrusted(entry.path, { dir: "ltr" }, "code"), " — ", untrusted(entry.error)),
      );
      if (more) items.push(el("li", { text: `…and ${plural(more, "more file")}` }));
      parts.push(
        el(
          "details",
          { class: "scan-errors", open: errors.length <= 5 },
          el("summary", {
            text: `${plural(errors.length + more, "file")} ${thumbnails ? "gave no thumbnail" : "could not be read"}`,
          }),
          el("ul", {}, ...items),
        ),
      );
    }
    this.summary.replaceChildren(...parts);
  }

  /** A note under the job: the page's words and isolated server text. */
  setNote(...parts) {
    this.note.replaceChildren(...parts);
  }
}

/** Set ``node``'s text unless it is that already: a live region rewritten with
 * the same words may be read out again, every few seconds. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function announce(text) {
  byId("announcer").textContent = text;
}

function onStatusChange(job) {
  healthSoon();
  if ((job.job_type === "scan" || job.job_type === "thumbnails") && TERMINAL.has(job.status)) {
    // Even a cancelled or failed scan may have stored some videos.
    refreshLibrary();
  }
}

let jobsSlow = null; // the hint's timer, while the job list has not answered
let jobsOwed = false; // the last load of the list failed: the next /health read asks again

/** Say why, if the job list has not answered (or its stream not opened) in JOBS_SLOW_MS. */
function hintIfSlow() {
  clearTimeout(jobsSlow);
  jobsSlow = setTimeout(() => {
    byId("jobs-count").textContent = JOBS_SLOW;
  }, JOBS_SLOW_MS);
}

async function loadJobs() {
  const asked = eventCount;
  hintIfSlow();
  // A load that fails is owed: the next /health read asks again (a reset's
  // reload that failed would leave the list stale, and the stream says no
  // more). A 401 waits for the sign-in, which loads the list again.
  jobsOwed = true;
  let response;
  try {
    response = await request("GET", `${API}/jobs?limit=${jobLimit}`);
  } catch {
    byId("jobs-count").textContent = "Could not load the jobs: the service is unreachable.";
    return;
  } finally {
    clearTimeout(jobsSlow);
  }
  jobsOwed = !(response.ok && response.data) && response.status !== 401;
  if (!response.ok || !response.data) {
    byId("jobs-count").textContent =
      response.status === 401 ? needToken() : couldNot("load the jobs", response);
    return;
  }
  const { jobs, total } = response.data;
  const list = byId("jobs");
  const newestBefore = newestShown();
  const shown = new Set(jobs.map((job) => job.job_id));
  let focusLost = false;
  for (const [id, view] of views) {
    if (!shown.has(id)) {
      focusLost ||= view.root.contains(document.activeElement);
      view.root.remove();
      views.delete(id);
    }
  }
  jobs.forEach((job, index) => {
    let view = views.get(job.job_id);
    if (!view) {
      view = new JobView(job, newestBefore === null || job.submitted_at > newestBefore);
      views.set(job.job_id, view);
    } else if (view.eventAt <= asked && !TERMINAL.has(view.status)) {
      view.update(job); // unless the stream brought newer news while the list was asked for
    }
    // Move only what is out of place: moving a node would take the focus from it.
    if (list.children[index] !== view.root) list.insertBefore(view.root, list.children[index] || null);
  });
  // A job that left the list (older than those shown now) took the keyboard
  // focus with it: it goes to the oldest job still shown, or the list's heading.
  if (focusLost) (jobs.length ? views.get(jobs.at(-1).job_id).title : byId("jobs-title")).focus();
  jobsLoaded = true;
  byId("jobs-empty").hidden = total > 0;
  const atMost = jobLimit >= JOBS_SHOWN_MAX ? " (the most this page shows)" : "";
  byId("jobs-count").textContent =
    total > jobs.length ? `${plural(total, "job")}, newest ${jobs.length} shown${atMost}` : plural(total, "job");
  const more = byId("jobs-more");
  const noMore = total <= jobs.length || jobLimit >= JOBS_SHOWN_MAX;
  // The button hides with the last of the older jobs: the focus goes to the
  // first of those it showed (the oldest job if none), not to the page's body.
  if (noMore && document.activeElement === more && jobs.length) {
    views.get(jobs[Math.min(olderFrom, jobs.length - 1)].job_id).title.focus();
  }
  more.hidden = noMore;
}

/**
 * `load` run once at a time: asked again while it runs, it runs once more
 * after, however often it was asked (the stream and a burst of ended jobs can
 * ask often). `run.busy()` says whether it is running.
 */
function oneAtATime(load) {
  let running = null;
  let again = false;
  const run = () => {
    if (running) {
      again = true;
      return running;
    }
    running = load().finally(() => {
      running = null;
      if (again) {
        again = false;
        run();
      }
    });
    return running;
  };
  run.busy = () => running !== null;
  return run;
}

/** Reload the job list. */
const reloadJobs = oneAtATime(loadJobs);

// ---------------------------------------------------------- the event stream

let events = null; // the page's one EventSource
let lastEventId = ""; // the id of the last event applied, to resume after
let eventCount = 0; // events applied so far (orders them against list reloads)
let reconnectTimer = null;
let reconnectFailures = 0; // streams closed in a row without opening
let streamFailed = false; // a stream of this page failed since one last opened

/** The wait before opening a closed stream again: backed off, with jitter. */
function reconnectDelay() {
  const ceiling = Math.min(RECONNECT_MS * 2 ** reconnectFailures, RECONNECT_MAX_MS);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** The live badge, and beside it why the service refused the stream (`why`), if it did. */
function showLive(state, text, why = "") {
  let badge = byId("jobs-live");
  if (!badge) {
    badge = el("span", { id: "jobs-live", class: "badge", role: "status" });
    const why = el("span", { id: "jobs-live-why", class: "live-why", role: "status" });
    byId("jobs-count").after(badge, why);
  }
  badge.dataset.state = state;
  setText(badge, text);
  setText(byId("jobs-live-why"), why);
}

/**
 * Why the service refused the stream `source`, shown beside the badge: an
 * EventSource does not say, so the stream is asked for once more, and that
 * answer's status and reason are shown (all streams taken, a 503 that names
 * STOAT_MAX_STREAMS; the service stopping). An answer that opens a stream is
 * closed at once: the next attempt opens one. Unreachable, or a 401: the
 * list says so (it asks for the access token).
 */
async function explainRefusedStream(source) {
  const controller = new AbortController();
  try {
    const response = await fetch(`${API}/events`, {
      headers: { Accept: "text/event-stream" },
      signal: controller.signal,
    });
    if (response.ok || response.status === 401) return; // a 401: the list asks for the token
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (events === source && source.readyState === EventSource.CLOSED) {
      showLive("down", "reconnecting…", couldNot("follow the jobs live", { status: response.status, data }));
    }
  } catch {
    // unreachable, or aborted: the job list says why
  } finally {
    controller.abort();
  }
}

/** Follow every job on one stream; resume from the last id seen when it comes back. */
function connectEvents() {
  clearTimeout(reconnectTimer);
  if (events) events.close();
  // A new EventSource sends no Last-Event-ID of its own: the query carries it.
  const query = lastEventId ? `?last_event_id=${encodeURIComponent(lastEventId)}` : "";
  const source = new EventSource(`${API}/events${query}`);
  events = source;
  let reopened = false;
  source.onopen = () => {
    reconnectFailures = 0;
    showLive("ok", "live");
    // A fresh stream brings the jobs not ended and then changes: the list shows
    // the rest. It is open before the list is asked for, so no change falls in
    // between. A resumed one brings what was missed, or a reset: so does the
    // browser's own reconnection of this source, with the id its stream gave
    // last (the first line gives one when it has nothing else to send). Opened
    // anew with no id after a failure (an outage, even before the first open),
    // nothing says what changed meanwhile: the library is loaded again too.
    if (!lastEventId && !reopened) {
      reloadJobs();
      if (streamFailed) refreshLibrary();
    }
    reopened = true;
    streamFailed = false;
  };
  source.addEventListener("job", (event) => {
    lastEventId = event.lastEventId;
    let job;
    try {
      job = JSON.parse(event.data);
    } catch {
      return;
    }
    onJobEvent(job);
  });
  source.addEventListener("reset", (event) => {
    // Changes were missed (the service restarted, or this page fell far behind):
    // the jobs, and what the missed scans changed in the library.
    lastEventId = event.lastEventId;
    reloadJobs();
    refreshLibrary();
  });
  source.onerror = () => {
    streamFailed = true;
    showLive("down", "reconnecting…");
    // CONNECTING: the browser retries by itself, with Last-Event-ID. CLOSED:
    // it gave up (the service answered 503 while stopping, or 401): reload the
    // list, which says why (a token message for a 401), and start again later.
    if (source.readyState === EventSource.CLOSED) {
      // An EventSource does not say why it closed: the list says it (a 401 asks
      // for the access token, an unreachable service says so), and so does
      // one more request for the stream (a 503: all streams taken, stopping).
      reloadJobs();
      explainRefusedStream(source);
      reconnectTimer = setTimeout(connectEvents, reconnectDelay());
      reconnectFailures += 1;
    } else if (!jobsLoaded) {
      reloadJobs(); // an error is no wait for a connection: the list says what it is
    }
  };
}

function onJobEvent(job) {
  eventCount += 1;
  const view = views.get(job.job_id);
  if (view) {
    view.eventAt = eventCount;
    view.update(job);
  } else if (isNewerThanShown(job)) {
    reloadJobs(); // a job started elsewhere (another tab, curl): it goes on top
  } else if (TERMINAL.has(job.status)) {
    onStatusChange(job); // older than the jobs shown: what it changed is shown all the same
  }
}

/** The newest `submitted_at` of the jobs on the page; null when none is. */
function newestShown() {
  let newest = null;
  for (const view of views.values()) {
    if (newest === null || view.job.submitted_at > newest) newest = view.job.submitted_at;
  }
  return newest;
}

/** Would this job be on the page: newer than the oldest job shown, or room left? */
function isNewerThanShown(job) {
  if (views.size < jobLimit) return true;
  let oldest = null;
  for (const view of views.values()) {
    if (oldest === null || view.job.submitted_at < oldest) oldest = view.job.submitted_at;
  }
  return job.submitted_at > oldest;
}

async function cancelJob(view) {
  // aria-disabled, not disabled: a disabled button would drop the keyboard focus.
  if (view.cancelButton.getAttribute("aria-disabled") === "true") return;
  view.cancelButton.setAttribute("aria-disabled", "true");
  view.setNote();
  try {
    // An empty JSON body: every state change is sent as JSON.
    const response = await request("POST", `${API}/jobs/${encodeURIComponent(view.id)}/cancel`, {});
    if (response.status === 200) {
      view.update(response.data);
    } else if (response.status === 409 && response.data) {
      const { detail, ...job } = response.data;
      view.update(job);
      view.setNote(`It could not be cancelled: it had already ended (${job.status}).`);
    } else if (response.status === 404) {
      view.setNote("The service no longer knows this job.");
    } else if (response.status === 401) {
      view.setNote("It was not cancelled: ", needToken());
    } else {
      const detail = detailText(response.data);
      view.setNote("It could not be cancelled: ", detail ? untrusted(detail) : String(response.status), ".");
    }
  } catch {
    view.setNote("The service is unreachable: the job was not cancelled.");
  } finally {
    view.cancelButton.removeAttribute("aria-disabled");
  }
}

// --------------------------------------------------------------------- scans

async function startScan(event) {
  event.preventDefault();
  const input = byId("scan-path");
  const feedback = byId("scan-feedback");
  const button = byId("scan-submit");
  // aria-disabled, not disabled: a disabled button would drop the keyboard focus.
  if (button.getAttribute("aria-disabled") === "true") return;
  const path = input.value; // as typed: a folder's name may begin or end with a space
  const recursive = byId("scan-recursive").checked;
  // Destructive, so asked for each scan: unticked once a scan is accepted.
  const forget = byId("scan-forget");
  const body = forget.checked ? { path, recursive, forget_unmounted: true } : { path, recursive };
  const say = (kind, ...parts) => {
    feedback.dataset.kind = kind;
    feedback.replaceChildren(...parts);
  };
  const quoted = () => ["“", untrusted(path, { dir: "ltr" }), "”"];
  if (!path.trim()) {
    say("error", "Enter the absolute path of a folder, such as /srv/videos.");
    input.focus();
    return;
  }
  button.setAttribute("aria-disabled", "true");
  say("info", "Asking to scan ", ...quoted(), "…");
  let response;
  try {
    response = await request("POST", `${API}/videos/scan`, body);
  } catch {
    say("error", "The service is unreachable. Check that it is running, then try again.");
    return;
  } finally {
    button.removeAttribute("aria-disabled");
  }
  if (response.status !== 202 || !response.data) {
    input.setAttribute("aria-invalid", String(response.status < 500));
    const spaced = path !== path.trim() ? [" The path begins or ends with white space."] : [];
    say("error", ...explainRefusal(response, path), ...spaced);
    return;
  }
  input.removeAttribute("aria-invalid");
  forget.checked = false;
  const { status } = response.data;
  say("ok", "Scan of ", ...quoted(), ` accepted (${status}). Follow it under Jobs.`);
  await reloadJobs();
}

// ------------------------------------------------------------------- library

// What the library shows, kept in the address (?q=…&sort=-size_bytes&page=2&video=7)
// so that a reload or a shared link opens the same view.
const SORTS = {
  path: "path",
  filename: "file name",
  width: "width",
  height: "height",
  duration_seconds: "duration",
  size_bytes: "size",
  updated_at: "last update",
};
const SEARCH_DELAY_MS = 250;

let videoOffset = 0;
let videoQuery = "";
// The order a file manager gives, as the File column promises; the API's own
// default, the path, is kept for ?sort=path.
const DEFAULT_SORT = "filename";
let videoSort = DEFAULT_SORT; // a key of SORTS, "-" in front for descending

/** The address's query as the page last read or wrote it. */
let addressShown = window.location.search;

/** Read the view from the address (a bad value falls back to the default). */
function readAddress() {
  addressShown = window.location.search;
  const params = new URLSearchParams(window.location.search);
  videoQuery = (params.get("q") || "").slice(0, 500);
  const sort = params.get("sort") || DEFAULT_SORT;
  videoSort = Object.hasOwn(SORTS, sort.replace(/^-/, "")) ? sort : DEFAULT_SORT;
  const page = Number.parseInt(params.get("page") || "1", 10);
  videoOffset = Number.isSafeInteger(page) && page > 1 ? (page - 1) * VIDEO_PAGE : 0;
  byId("video-search").value = videoQuery;
  return params.get("video");
}

/** Write the view into the address without adding a history entry. */
function writeAddress() {
  const params = new URLSearchParams(window.location.search);
  const set = (key, value, fallback) => {
    if (value === fallback) params.delete(key);
    else params.set(key, value);
  };
  set("q", videoQuery, "");
  set("sort", videoSort, DEFAULT_SORT);
  set("page", String(videoOffset / VIDEO_PAGE + 1), "1");
  const video = detailVideoId ?? videoAfterSignIn;
  if (video === null) params.delete("video");
  else params.set("video", String(video));
  const query = params.toString();
  const url = `${window.location.pathname}${query ? `?${query}` : ""}${window.location.hash}`;
  if (url !== `${window.location.pathname}${window.location.search}${window.location.hash}`) {
    history.replaceState(null, "", url);
  }
  addressShown = window.location.search;
}

/** Reload the library's page. */
const refreshLibrary = oneAtATime(loadVideos);

function videosUrl() {
  const params = new URLSearchParams({ limit: String(VIDEO_PAGE), offset: String(videoOffset) });
  if (videoQuery) params.set("q", videoQuery);
  params.set("sort", videoSort);
  return `${API}/videos?${params}`;
}

/** The order and page of the rows shown (null before the first load). */
let shownView = null;

/** A page that could not be loaded leaves the rows as they were: the order
 * and page the table, its caption and the address say go back to theirs. */
function keepShownView() {
  if (shownView === null) return;
  [videoSort, videoOffset] = shownView;
  showSort();
  writeAddress();
}

async function loadVideos() {
  const count = byId("library-count");
  writeAddress();
  const asked = [videoSort, videoOffset]; // what the answer shows: a later ask may change them
  let response;
  try {
    response = await request("GET", videosUrl());
  } catch {
    count.textContent = "Could not load the library: the service is unreachable.";
    keepShownView();
    return;
  }
  if (!response.ok || !response.data) {
    count.textContent =
      response.status === 401 ? needToken() : couldNot("load the library", response);
    keepShownView();
    return;
  }
  const { videos, total } = response.data;
  if (videos.length === 0 && total > 0 && videoOffset > 0) {
    // The page emptied (videos were removed): show the last one instead.
    videoOffset = Math.floor((total - 1) / VIDEO_PAGE) * VIDEO_PAGE;
    await loadVideos();
    return;
  }
  // Keep keyboard focus on the same video's button when the rows are rebuilt;
  // if that video went, on the table's region rather than lost to the body.
  const focusedId = document.activeElement?.closest("#video-rows tr")?.dataset.videoId;
  byId("video-rows").replaceChildren(...videos.map(videoRow));
  shownView = asked;
  if (focusedId) {
    const same = byId("video-rows").querySelector(`tr[data-video-id="${focusedId}"] button`);
    (same || byId("library-section").querySelector(".table-wrap")).focus();
  }
  // The search comes from the address too: a shared link's ?q= is someone else's text.
  count.replaceChildren(
    ...(videoQuery
      ? [`${plural(total, "video")} matching “`, untrusted(videoQuery), "”"]
      : [plural(total, "video")]),
  );
  byId("library-empty").replaceChildren(
    ...(videoQuery
      ? ["No video matches “", untrusted(videoQuery), "”."]
      : ["No videos yet. Scan a folder to fill the library."]),
  );
  byId("library-empty").hidden = total > 0;
  byId("page-info").textContent =
    total > 0 ? `${videoOffset + 1}–${videoOffset + videos.length} of ${total}` : "";
  setPager(videoOffset === 0, videoOffset + videos.length >= total);
}

function setPager(atFirst, atLast) {
  const prev = byId("page-prev");
  const next = byId("page-next");
  const focused = document.activeElement;
  prev.disabled = atFirst;
  next.disabled = atLast;
  // Keep keyboard focus on the pager when the focused button turns off.
  if (focused === prev && atFirst && !atLast) next.focus();
  if (focused === next && atLast && !atFirst) prev.focus();
}

/** A thumbnail, lazy-loaded, with a placeholder box while there is none. */
function thumbnail(video, cls) {
  const box = el("span", { class: `thumb ${cls}` });
  const image = el("img", {
    // The row's last update in the address: a page keeps the image of an
    // address it has shown, so a changed video's new frame needs a new one.
    src: `${API}/videos/${encodeURIComponent(video.id)}/thumbnail?v=${encodeURIComponent(video.updated_at)}`,
    alt: `Frame of ${spelled(video.filename)}`,
    loading: "lazy",
    decoding: "async",
  });
  image.addEventListener("error", () => {
    image.remove();
    box.classList.add("missing");
    box.setAttribute("role", "img");
    // Not made yet, or its frame cannot be decoded: the 404 does not say which.
    box.setAttribute("aria-label", `No preview of ${spelled(video.filename)}`);
  });
  box.append(image);
  return box;
}

function videoRow(video) {
  const codecs = [
    video.video_codec ? untrusted(video.video_codec) : "—",
    " / ",
    video.audio_codec ? untrusted(video.audio_codec) : "no audio",
  ];
  const open = el(
    "button",
    { type: "button", class: "link", "aria-haspopup": "dialog" },
    untrusted(video.filename),
  );
  open.addEventListener("click", () => openDetail(video.id, open));
  return el(
    "tr",
    { "data-video-id": video.id },
    el(
      "td",
      { class: "file" },
      el(
        "div",
        { class: "file-cell" },
        thumbnail(video, "small"),
        el("span", { class: "names" }, open, el("small", {}, untrusted(video.path, { dir: "ltr" }))),
      ),
    ),
    resolutionCell(video),
    el("td", { text: formatRate(video.frame_rate_numerator, video.frame_rate_denominator) }),
    el("td", { text: formatClock(video.duration_seconds) }),
    el("td", { class: "codecs" }, ...codecs),
    el("td", { class: "num", text: formatBytes(video.size_bytes) }),
  );
}

/** Mark the sorted column (aria-sort) and say the order in the table's caption. */
function showSort() {
  const key = videoSort.replace(/^-/, "");
  const direction = videoSort.startsWith("-") ? "descending" : "ascending";
  for (const header of document.querySelectorAll("#videos th[data-sort]")) {
    if (header.dataset.sort === key) header.setAttribute("aria-sort", direction);
    else header.removeAttribute("aria-sort");
  }
  byId("videos-caption").textContent = `Videos in the library, ordered by ${SORTS[key]}, ${direction}`;
}

function sortBy(key) {
  videoSort = videoSort === key ? `-${key}` : key;
  videoOffset = 0;
  showSort();
  announce(`Videos ordered by ${SORTS[key]}, ${videoSort.startsWith("-") ? "descending" : "ascending"}.`);
  refreshLibrary();
}

let searchTimer = null;

function searchFor(text) {
  clearTimeout(searchTimer);
  const query = text.trim().slice(0, 500);
  if (query === videoQuery) return;
  videoQuery = query;
  videoOffset = 0;
  refreshLibrary();
}

function startLibrary() {
  const input = byId("video-search");
  byId("library-search").addEventListener("submit", (event) => {
    event.preventDefault();
    searchFor(input.value);
  });
  input.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => searchFor(input.value), SEARCH_DELAY_MS);
  });
  for (const header of document.querySelectorAll("#videos th[data-sort]")) {
    header.querySelector("button").addEventListener("click", () => sortBy(header.dataset.sort));
  }
  byId("detail-close").addEventListener("click", () => byId("video-detail").close());
  byId("video-detail").addEventListener("close", closedDetail);
  showAddress();
  // Back and Forward within the page (the skip link's #main is an entry of
  // its own; views are not: the address is changed in place) show the view
  // of the address they come to.
  window.addEventListener("popstate", () => {
    // The skip link's own entry differs only in its #main: nothing to show.
    if (window.location.search === addressShown) return;
    videoAfterSignIn = null; // a video a sign-in was to open belongs to the address left
    showAddress();
    refreshLibrary();
  });
}

/** Show the view the address names: its order, and its video's details, if any. */
function showAddress() {
  const videoId = readAddress();
  showSort();
  const wanted = videoId && /^[1-9]\d{0,18}$/.test(videoId) ? Number(videoId) : null;
  if (wanted !== null && wanted !== detailVideoId) openDetail(wanted, null);
  else if (wanted === null && byId("video-detail").open) byId("video-detail").close();
}

// --------------------------------------------------------------- detail view

let detailVideoId = null;
let videoAfterSignIn = null; // a video the 401 kept from opening: opened once signed in
let detailOpener = null; // the button that opened it, to give focus back

function yesNo(value) {
  if (value === null || value === undefined) return null;
  return value ? "yes" : "no";
}

function bitRate(value) {
  if (!value) return null;
  return value >= 1e6 ? `${(value / 1e6).toFixed(2)} Mbit/s` : `${Math.round(value / 1e3)} kbit/s`;
}

/** The parts known, each isolated (a metadata value is the file's to choose), or null. */
function joined(...parts) {
  const known = parts.filter((part) => part !== null && part !== undefined && part !== "");
  if (!known.length) return null;
  const fragment = document.createDocumentFragment();
  known.forEach((part, index) => fragment.append(...(index ? [" · "] : []), untrusted(part)));
  return fragment;
}

/** The detail view's rows: [label, text or node or null (not stated)]. */
function detailFields(video) {
  const rotation = video.rotation ? `${video.rotation}°` : video.rotation === 0 ? "none" : null;
  return [
    ["Container", video.container_format],
    ["Size", formatBytes(video.size_bytes)],
    ["Duration", video.duration_seconds == null ? null : formatClock(video.duration_seconds)],
    ["Frames", video.duration_frames],
    ["Coded size", video.width && video.height ? formatResolution(video.width, video.height) : null],
    [
      "Displayed size",
      video.display_width && video.display_height
        ? formatResolution(video.display_width, video.display_height)
        : null,
    ],
    ["Rotation", rotation],
    ["Mirrored", yesNo(video.mirrored)],
    ["Sample aspect ratio", video.sample_aspect_ratio],
    ["Frame rate", video.frame_rate_numerator ? formatRate(video.frame_rate_numerator, video.frame_rate_denominator) : null],
    ["Interlaced", yesNo(video.interlaced)],
    ["Video codec", video.video_codec],
    ["Pixel format", joined(video.pixel_format, video.bit_depth ? `${video.bit_depth}-bit` : null)],
    ["Video bit rate", bitRate(video.video_bit_rate)],
    ["Overall bit rate", bitRate(video.bit_rate)],
    ["Colour", joined(video.color_space, video.color_transfer, video.color_primaries, video.color_range)],
    [
      "Streams",
      video.video_stream_count == null
        ? null
        : `${video.video_stream_count} video, ${video.audio_stream_count} audio, ${video.subtitle_stream_count} subtitle`,
    ],
    ["Audio codec", video.audio_codec],
    [
      "Audio",
      joined(
        video.audio_channels ? plural(video.audio_channels, "channel") : null,
        video.audio_channel_layout,
        video.audio_sample_rate ? `${video.audio_sample_rate} Hz` : null,
      ),
    ],
    ["Timecode", video.timecode],
    ["Created", video.creation_time ? timeElement(video.creation_time) : null],
    ["In the library since", timeElement(video.created_at)],
    ["Last updated", timeElement(video.updated_at)],
  ];
}

async function openDetail(videoId, opener) {
  const dialog = byId("video-detail");
  const status = byId("detail-status");
  detailVideoId = videoId;
  detailOpener = opener;
  videoAfterSignIn = null;
  byId("detail-title").textContent = "Video";
  byId("detail-path").textContent = "";
  byId("detail-preview").replaceChildren();
  byId("detail-fields").replaceChildren();
  status.textContent = "Loading…";
  if (!dialog.open) dialog.showModal();
  writeAddress();
  let response;
  try {
    response = await request("GET", `${API}/videos/${encodeURIComponent(videoId)}`);
  } catch {
    if (detailVideoId === videoId) {
      status.textContent = "Could not load this video: the service is unreachable.";
    }
    return;
  }
  if (detailVideoId !== videoId) return; // closed, or another one opened meanwhile
  if (response.status === 401) {
    // The sign-in form, under the modal dialog, is what the page needs; the
    // video (and its ?video= in the address) waits for it.
    videoAfterSignIn = videoId;
    detailOpener = null;
    needToken();
    dialog.close();
    return;
  }
  if (!response.ok || !response.data) {
    status.textContent =
      response.status === 404
        ? "This video is no longer in the library."
        : couldNot("load this video", response);
    return;
  }
  const video = response.data;
  status.textContent = "";
  byId("detail-title").replaceChildren(untrusted(video.filename));
  byId("detail-path").replaceChildren(...pathNodes(video.path)); // an untrusted <bdi dir="ltr"> already
  byId("detail-preview").replaceChildren(thumbnail(video, "large"));
  byId("detail-fields").replaceChildren(
    ...detailFields(video).flatMap(([label, value]) => [
      el("dt", { text: label }),
      value === null || value === undefined
        ? el("dd", { class: "unknown", text: "not stated" })
        : el("dd", {}, value instanceof Node ? value : untrusted(value)),
    ]),
  );
}

function closedDetail() {
  const videoId = detailVideoId;
  detailVideoId = null;
  writeAddress();
  // The row may have been rebuilt since: find its button again.
  const target =
    (videoAfterSignIn !== null && !byId("signin").hidden ? byId("signin-token") : null) ||
    (detailOpener && detailOpener.isConnected ? detailOpener : null) ||
    byId("video-rows").querySelector(`tr[data-video-id="${videoId}"] button`) ||
    byId("video-search");
  detailOpener = null;
  target.focus();
}

// ------------------------------------------------------ health, while visible

/** The periodic /health read, skipped while the tab is hidden. */
function healthTick() {
  if (!document.hidden) refreshHealth();
}

function watchVisibility() {
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshHealth(); // catch up at once when shown again
  });
}

// -------------------------------------------------------------------- health

let lastSubmitted = null;
let healthAsked = 0; // /health reads begun
let healthShown = 0; // the latest of them shown: an older answer arriving later is dropped

/** Read /health: a burst of ended jobs asks for one more read, not one each. */
const healthSoon = oneAtATime(refreshHealth);

async function refreshHealth() {
  const badge = byId("health-status");
  const show = (state, text) => {
    badge.dataset.state = state;
    setText(badge, text);
  };
  const mine = ++healthAsked;
  let response;
  try {
    response = await request("GET", "/health");
  } catch {
    if (mine < healthShown) return; // a later read has answered already
    healthShown = mine;
    show("down", "unreachable");
    return;
  }
  if (mine < healthShown) return;
  healthShown = mine;
  const data = response.data;
  if (!data || !data.jobs) {
    show("down", `error ${response.status}`);
    return;
  }
  if (data.status === "broken") {
    show("down", "service broken");
    badge.title = detailText(data); // what is wrong with the video store, and what to do
  } else {
    show(data.status === "ok" ? "ok" : "stopping", `service ${data.status}`);
    badge.removeAttribute("title");
  }
  setText(byId("stat-pending"), String(data.jobs.pending));
  setText(byId("stat-running"), String(data.jobs.running));
  setText(byId("health-version"), data.version ? `v${data.version}` : "");
  const submittedElsewhere = lastSubmitted !== null && data.jobs.submitted !== lastSubmitted;
  if (submittedElsewhere || (jobsOwed && !reloadJobs.busy())) reloadJobs();
  lastSubmitted = data.jobs.submitted;
}

// --------------------------------------------------------------------- start

// ------------------------------------------------------------------ sign in

let tokenInAddress = false; // opened as /#token=...: the form says why it is not used

/** A 401 (no session, or one expired or of another token): show the sign-in form. */
function needToken() {
  byId("signin").hidden = false;
  if (tokenInAddress) {
    tokenInAddress = false; // said once: a later 401 must not replace what sign-in says
    const feedback = byId("signin-feedback");
    feedback.dataset.kind = "error";
    feedback.textContent =
      "A token in the address is not used: the browser keeps it in its history. Sign in here, and change the token if others use this browser.";
  }
  return NEEDS_TOKEN;
}

/** Trade the token typed in for the session cookie, then load what the 401s hid. */
async function signIn(event) {
  event.preventDefault();
  const field = byId("signin-token");
  const feedback = byId("signin-feedback");
  const token = field.value.trim();
  feedback.dataset.kind = "error";
  // fetch() refuses a header value it cannot send, as it refuses an unreachable host.
  if (!/^[\x21-\x7e]+$/.test(token)) {
    feedback.textContent = "A token is printable ASCII, with no spaces.";
    return;
  }
  let response;
  try {
    response = await fetch(`${API}/session`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: "{}",
    });
  } catch {
    feedback.textContent = "Could not sign in: the service is unreachable.";
    return;
  }
  if (response.status === 401) {
    feedback.textContent = "This token is not the service's.";
    return;
  }
  if (!response.ok) {
    let data = null;
    try {
      data = await response.json();
    } catch {
      // not JSON: the status alone
    }
    feedback.textContent = couldNot("sign in", { status: response.status, data });
    return;
  }
  field.value = "";
  feedback.textContent = "";
  tokenInAddress = false;
  byId("signin").hidden = true;
  announce("Signed in.");
  reconnectFailures = 0;
  connectEvents();
  // A fresh stream (no event id yet) loads the list when it opens, and the
  // library too if it had failed (the 401 closed it); a resumed one loads
  // neither, and both still say "needs its token".
  if (lastEventId) reloadJobs();
  if (lastEventId || !streamFailed) refreshLibrary();
  if (videoAfterSignIn !== null) {
    const videoId = videoAfterSignIn;
    videoAfterSignIn = null;
    openDetail(videoId, null);
  }
}

/** A link of the old /#token=<token> kind: the token is already in the browser's
 * history, so it is not used; the fragment leaves the address bar, and the
 * sign-in form, if the service asks for the token, says why. */
function dropTokenFragment() {
  if (!window.location.hash.startsWith("#token=")) return;
  history.replaceState(null, "", window.location.pathname + window.location.search);
  tokenInAddress = true;
}

function start() {
  dropTokenFragment();
  byId("signin-form").addEventListener("submit", signIn);
  byId("scan-form").addEventListener("submit", startScan);
  byId("jobs-more").addEventListener("click", () => {
    olderFrom = views.size;
    jobLimit = Math.min(jobLimit + JOB_PAGE, JOBS_SHOWN_MAX);
    reloadJobs(); // one at a time: one in flight asks again, with the new limit
  });
  byId("page-prev").addEventListener("click", () => {
    videoOffset = Math.max(0, videoOffset - VIDEO_PAGE);
    refreshLibrary();
  });
  byId("page-next").addEventListener("click", () => {
    videoOffset += VIDEO_PAGE;
    refreshLibrary();
  });
  startLibrary();
  watchVisibility();
  refreshHealth();
  showLive("down", "connecting…");
  hintIfSlow(); // the stream may wait for a connection too
  connectEvents(); // its opening loads the job list
  refreshLibrary();
  setInterval(healthTick, HEALTH_EVERY_MS);
}

start();
