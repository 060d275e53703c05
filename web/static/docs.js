// Renders /openapi.json for people: operations by tag, then the WebSocket frames.
// Text only (textContent): nothing from the document is ever parsed as HTML.

const METHODS = ["get", "post", "delete"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

// A description's `code` spans as <code>, the rest as text.
function prose(text) {
  const node = el("p");
  (text || "").split("`").forEach((part, i) => node.append(i % 2 ? el("code", {}, part) : part));
  return node;
}

function resolve(doc, schema) {
  if (!schema || !schema.$ref) return schema;
  return schema.$ref.replace(/^#\//, "").split("/").reduce((node, key) => node[key], doc);
}

function pretty(value) {
  return el("pre", {}, JSON.stringify(value, null, 2));
}

function parameters(doc, op) {
  const params = (op.parameters || []).map((p) => resolve(doc, p));
  if (!params.length && !op.requestBody) return [];
  const table = el("table", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "in"),
    el("th", {}, "schema"), el("th", {}, "description")));
  for (const p of params) {
    table.append(el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
      el("td", {}, el("code", {}, JSON.stringify(p.schema))), el("td", {}, prose(p.description))));
  }
  const nodes = [el("h4", {}, "Parameters"), table];
  if (op.requestBody) {
    const body = op.requestBody.content["application/json"];
    nodes.push(el("h4", {}, "Body (application/json)"), pretty(resolve(doc, body.schema)));
  }
  return nodes;
}

function responses(doc, op) {
  const table = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning"),
    el("th", {}, "type"), el("th", {}, "headers")));
  for (const [status, raw] of Object.entries(op.responses)) {
    const response = resolve(doc, raw);
    const types = Object.keys(response.content || {}).join(", ");
    const headers = Object.keys(response.headers || {}).join(", ");
    table.append(el("tr", {}, el("td", {}, status), el("td", {}, prose(response.description)),
      el("td", {}, types), el("td", {}, headers)));
  }
  return [el("h4", {}, "Responses"), table];
}

function websocket(doc, ws) {
  const nodes = [el("h4", {}, "WebSocket frames"), prose(ws.description)];
  for (const side of ["client", "server"]) {
    const union = resolve(doc, ws[side]);
    nodes.push(el("h5", {}, `${side} frames`));
    for (const ref of union.oneOf) {
      const schema = resolve(doc, ref);
      const line = prose(schema.description);
      line.prepend(el("code", {}, ref.$ref.split("/").pop()), ": ");
      nodes.push(line);
      nodes.push(pretty(schema.properties));
    }
  }
  nodes.push(el("h5", {}, "close codes"), pretty(ws.closeCodes));
  return nodes;
}

function operation(doc, path, method, op) {
  const head = el("h3", {}, el("span", { class: `method ${method}` }, method.toUpperCase()),
    el("span", { class: "path" }, path));
  if ((op.security || []).length) head.append(el("span", { class: "lock" }, "Bearer token"));
  const section = el("section", { class: "op", id: op.operationId }, head,
    el("p", {}, op.summary), prose(op.description));
  section.append(...parameters(doc, op), ...responses(doc, op));
  if (op["x-websocket"]) section.append(...websocket(doc, op["x-websocket"]));
  return section;
}

async function main() {
  const main = document.getElementById("api");
  const doc = await (await fetch("/openapi.json")).json();
  document.getElementById("intro").replaceWith(prose(doc.info.description));
  main.replaceChildren();
  for (const tag of doc.tags) {
    const ops = [];
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of METHODS) {
        if (item[method] && item[method].tags.includes(tag.name)) {
          ops.push(operation(doc, path, method, item[method]));
        }
      }
    }
    if (ops.length) main.append(el("h2", {}, tag.name), el("p", {}, tag.description), ...ops);
  }
  const sse = doc.components.schemas.SseEvent;
  main.append(el("h2", {}, "Server-Sent Events"), prose(sse.description),
    pretty(doc.components.schemas.SseLikes));
}

main().catch((error) => {
  document.getElementById("api").textContent = `Could not load /openapi.json: ${error}`;
});
