// Aegis admin UI: a thin client of the REST API under /api/v1 (no framework, no build step).
// The admin token lives in sessionStorage only for this tab; every call sends it as a
// bearer token. Nothing here ever sees a private key again after it is uploaded.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "aegis-admin-token";
let certificates = [];

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(method, path, body) {
  const options = { method, headers: { Authorization: `Bearer ${token()}` } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(`/api/v1${path}`, options);
  if (response.status === 401) { signOut("The token was not accepted."); throw new Error("unauthorised"); }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = (data && data.error) || { message: response.statusText };
    throw new Error(error.field ? `${error.field}: ${error.message}` : error.message);
  }
  return data;
}

function say(text, isError = false) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function button(label, className, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

function list(value) {
  return value.split(",").map((s) => s.trim()).filter(Boolean);
}

function show(view) {
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== view;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === view);
  say("");
  if (view === "hosts") loadHosts();
  if (view === "certificates") loadCertificates();
}

async function loadCertificates() {
  try {
    certificates = await api("GET", "/certificates");
  } catch (e) { say(e.message, true); return; }
  const rows = $("cert-rows");
  rows.replaceChildren();
  for (const cert of certificates) {
    const row = rows.insertRow();
    cell(row, cert.id);
    cell(row, cert.domains.join(", "));
    cell(row, cert.source);
    cell(row, cert.issuer);
    cell(row, cert.expires_at.slice(0, 10));
    cell(row, cert.status, `status-${cert.status}`);
    cell(row, (cert.hosts || []).map((h) => h.domain).join(", ") || "—");
    cell(row, "").appendChild(button("Delete", "danger", async () => {
      if (!confirm(`Delete certificate ${cert.id}?`)) return;
      try { await api("DELETE", `/certificates/${cert.id}`); say("Certificate deleted."); loadCertificates(); }
      catch (e) { say(e.message, true); }
    }));
  }
  const select = $("host-cert");
  const current = select.value;
  select.replaceChildren(new Option("—", ""));
  for (const cert of certificates) select.add(new Option(`#${cert.id} ${cert.domains.join(", ")} (${cert.source})`, cert.id));
  select.value = current;
}

async function loadHosts() {
  let hosts;
  try {
    [hosts] = await Promise.all([api("GET", "/hosts"), loadCertificates()]);
  } catch (e) { say(e.message, true); return; }
  const rows = $("host-rows");
  rows.replaceChildren();
  for (const host of hosts) {
    const row = rows.insertRow();
    cell(row, [host.domain, ...host.aliases].join(", "));
    cell(row, host.upstream);
    cell(row, host.ssl_mode + (host.force_https ? ", HTTPS only" : ""));
    const serving = host.serving_certificate;
    cell(row, serving ? `${serving.step.replace("_", " ")}${serving.certificate_id ? ` #${serving.certificate_id}` : ""}` : "—");
    const actions = cell(row, "");
    actions.appendChild(button("Edit", "small", () => editHost(host)));
    actions.appendChild(button("Delete", "danger", async () => {
      if (!confirm(`Delete host ${host.domain}?`)) return;
      try { await api("DELETE", `/hosts/${host.id}`); say("Host deleted."); loadHosts(); }
      catch (e) { say(e.message, true); }
    }));
  }
}

function editHost(host) {
  $("host-id").value = host ? host.id : "";
  $("host-domain").value = host ? host.domain : "";
  $("host-aliases").value = host ? host.aliases.join(", ") : "";
  $("host-upstream").value = host ? host.upstream : "";
  $("host-ssl-mode").value = host ? host.ssl_mode : "none";
  $("host-cert").value = host && host.ssl_cert_id ? host.ssl_cert_id : "";
  $("host-tls").value = host ? host.tls_min_version : "1.2";
  $("host-force-https").checked = host ? host.force_https : false;
  $("host-hsts").checked = host ? host.hsts_enabled : false;
  $("host-hsts-age").value = host ? host.hsts_max_age : 31536000;
  $("host-hsts-sub").checked = host ? host.hsts_include_subdomains : false;
  $("host-hsts-preload").checked = host ? host.hsts_preload : false;
  $("host-form-title").textContent = host ? `Edit ${host.domain}` : "Add a proxy host";
  $("host-submit").textContent = host ? "Save" : "Add host";
  $("host-cancel").hidden = !host;
}

async function submitHost(event) {
  event.preventDefault();
  const id = $("host-id").value;
  const mode = $("host-ssl-mode").value;
  const body = {
    domain: $("host-domain").value.trim(),
    aliases: list($("host-aliases").value),
    upstream: $("host-upstream").value.trim(),
    ssl_mode: mode,
    ssl_cert_id: mode === "custom" && $("host-cert").value ? Number($("host-cert").value) : null,
    tls_min_version: $("host-tls").value,
    force_https: $("host-force-https").checked,
    hsts_enabled: $("host-hsts").checked,
    hsts_max_age: Number($("host-hsts-age").value),
    hsts_include_subdomains: $("host-hsts-sub").checked,
    hsts_preload: $("host-hsts-preload").checked,
  };
  try {
    await api(id ? "PUT" : "POST", id ? `/hosts/${id}` : "/hosts", body);
    say(id ? "Host saved." : "Host added.");
    editHost(null);
    loadHosts();
  } catch (e) { say(e.message, true); }
}

async function submitCertificate(event) {
  event.preventDefault();
  const body = { cert_pem: $("cert-pem").value, key_pem: $("key-pem").value };
  if ($("key-pass").value) body.key_passphrase = $("key-pass").value;
  try {
    const cert = await api("POST", "/certificates", body);
    $("cert-form").reset();
    say(`Certificate #${cert.id} stored for ${cert.domains.join(", ")}.`);
    loadCertificates();
  } catch (e) { say(e.message, true); }
}

async function submitCloudflare(event) {
  event.preventDefault();
  const method = $("cf-auth").value;
  const body = {
    auth_method: method,
    [method]: $("cf-secret").value,
    hostnames: list($("cf-hostnames").value),
    request_type: $("cf-type").value,
    requested_validity: Number($("cf-validity").value),
  };
  if ($("cf-zone").value.trim()) body.zone_id = $("cf-zone").value.trim();
  try {
    const result = await api("POST", "/certificates/cloudflare-origin", body);
    $("cf-form").reset();
    say(`Cloudflare certificate stored as #${result.id}, expires ${result.expires_on}.`);
  } catch (e) { say(e.message, true); }
}

function signIn() {
  $("login").hidden = true;
  $("nav").hidden = false;
  show("hosts");
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  for (const section of document.querySelectorAll(".view")) section.hidden = true;
  $("nav").hidden = true;
  $("login").hidden = false;
  say(reason || "", Boolean(reason));
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    try { await api("GET", "/hosts"); signIn(); } catch (e) { if (e.message !== "unauthorised") say(e.message, true); }
  });
  $("logout").addEventListener("click", () => signOut());
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => show(tab.dataset.view));
  $("host-form").addEventListener("submit", submitHost);
  $("host-cancel").addEventListener("click", () => editHost(null));
  $("cert-form").addEventListener("submit", submitCertificate);
  $("cf-form").addEventListener("submit", submitCloudflare);
  if (token()) signIn();
});
