// timelapse console: a single-page app over the REST API under /api/, as plain ES modules served as they are
// (no build step). Routes live in the URL fragment so that a reload or a shared link opens the same page.
import { onSignedOut, token } from "./api.js";
import { pageCompare } from "./compare.js";
import { $, h } from "./dom.js";
import { setRouter, stopPage } from "./lifecycle.js";
import { showLogin } from "./login.js";
import { pagePipeline } from "./pipeline.js";
import { pagePipelines } from "./pipelines.js";
import { forgetMe, loadMe, signedIn } from "./session.js";
import { pageSql } from "./sql.js";
import { pageState } from "./state.js";
import { pageTree } from "./tree.js";

async function route() {
  stopPage();
  const hash = location.hash || "#/";
  const m = hash.match(/[#&]token=([^&]+)/);
  if (m) {
    // `timelapse ui` printed the URL with the session token in its fragment (never sent to the server); take it
    // out of the address bar and the history at once.
    token.set(decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#/");
    return route();
  }
  if (!token.get()) return showLogin();
  const app = $("#app");
  try {
    if (!signedIn()) await loadMe();
    const parts = hash.replace(/^#\/?/, "").split("?")[0].split("/").filter(Boolean).map(decodeURIComponent);
    if (parts.length === 0) return await pagePipelines(app);
    if (parts[0] === "compare") return await pageCompare(app, new URLSearchParams(hash.split("?")[1] || ""));
    if (parts[0] === "p" && parts[1]) {
      const name = parts[1];
      if (parts.length === 2) return await pagePipeline(app, name);
      if (parts[2] === "tree") return await pageTree(app, name);
      if (parts[2] === "state") return await pageState(app, name, parts[3] || null);
      if (parts[2] === "sql") return await pageSql(app, name);
    }
    app.replaceChildren(h("p", { class: "error" }, `No page at ${hash}.`), h("a", { href: "#/" }, "Pipelines"));
  } catch (err) {
    if (err.status === 401) return;   // the API has already shown the login form
    app.replaceChildren(h("div", { class: "card", id: "page-error" },
      h("p", { class: "error" }, err.status === 403 ? `Not allowed: ${err.message}` : err.message),
      h("a", { href: "#/" }, "Back to the pipelines")));
  }
}

setRouter(route);
onSignedOut(showLogin);
$("#logout").addEventListener("click", () => { token.clear(); forgetMe(); showLogin(); });
window.addEventListener("hashchange", route);
route();
