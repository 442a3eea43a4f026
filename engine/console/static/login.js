// Shown with no token, and whenever the API answers 401 (unknown or revoked token), with the reason.
import { token } from "./api.js";
import { $, h } from "./dom.js";
import { rerender, stopPage } from "./lifecycle.js";
import { forgetMe } from "./session.js";

export function showLogin(message) {
  stopPage();
  $("#whoami").textContent = "";
  $("#logout").hidden = true;
  $("#crumbs").replaceChildren();
  const input = h("input", { type: "password", id: "login-token", placeholder: "tl_…", autocomplete: "off", required: true });
  const form = h("form", {
    id: "login-form", class: "card login",
    onsubmit: (e) => {
      e.preventDefault();
      token.set(input.value);
      forgetMe();
      rerender();
    },
  },
  h("h1", {}, "Sign in"),
  h("p", { class: "muted" }, "Paste the token `timelapse ui` printed, or one from `timelapse token create`."),
  message ? h("p", { class: "error", id: "login-error" }, message) : null,
  h("label", {}, h("span", {}, "Token"), input),
  h("button", { class: "primary", type: "submit" }, "Sign in"));
  $("#app").replaceChildren(form);
  input.focus();
}
