// The version tree: runs of epochs, savepoints, rollbacks, drains and branches, oldest first.
import { api, P } from "./api.js";
import { h } from "./dom.js";
import { drawTree } from "./graphs.js";
import { crumbs } from "./lifecycle.js";

export async function pageTree(app, name) {
  crumbs(name, "tree");
  const tree = await api(`${P(name)}/tree`);
  const details = h("div", { class: "card", id: "tree-details" }, h("p", { class: "muted" }, "Click a node for its details."));
  app.replaceChildren(h("h1", {}, "Version tree"),
    h("p", { class: "muted" }, "Runs of epochs, savepoints, rollbacks, drains and branches, oldest first; one lane per line of history."),
    drawTree(name, tree, details), h("h2", {}, "Details"), details);
}
