// Who the token is, per pipeline (GET /api/me). The API enforces the roles; the pages only disable the buttons
// a role may not use, and say why, so that nobody fills in a dialog just to be refused.
import { api } from "./api.js";
import { $, h } from "./dom.js";

const ROLES = ["viewer", "operator", "admin"];
const NEEDS = { savepoint: "operator", checkpoint: "operator", rollback: "admin", branch: "admin", deleteSavepoint: "admin" };

let me = null;

export const signedIn = () => me !== null;
export function forgetMe() { me = null; }

export async function loadMe() {
  me = await api("/api/me");
  const grants = Object.values(me.pipelines || {});
  const who = grants[0];
  $("#whoami").textContent = who ? `${who.user} · ${[...new Set(grants.map((g) => g.role))].join("/")}` : "";
  $("#logout").hidden = false;
}

function roleOn(name) {
  return (me && me.pipelines && me.pipelines[name] && me.pipelines[name].role) || "viewer";
}

function allowed(name, action) {
  return ROLES.indexOf(roleOn(name)) >= ROLES.indexOf(NEEDS[action]);
}

export function actionButton(name, action, label, onclick, attrs = {}) {
  const ok = allowed(name, action);
  return h("button", {
    type: "button", ...attrs, onclick, disabled: !ok, dataset: { needs: NEEDS[action] },
    title: ok ? attrs.title || "" : `needs the ${NEEDS[action]} role; this token is ${roleOn(name)} on ${name}`,
  }, label);
}
