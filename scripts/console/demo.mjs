// Starts a real `citysec demo` on free loopback ports with a fresh data directory, and
// helpers for the tests and the benchmark: the admin token, users, API calls, Chromium.

import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, createWriteStream } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '..', '..');
export const artefacts = path.join(repo, 'target', 'console-test');
export const bin = process.env.CITYSEC_BIN || path.join(repo, 'target', 'debug', 'citysec');
export const PASSWORD = 'console-test-password-1';

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// `args` go to the subcommand after the ports and data directory.
export async function startCitysec({ command = 'demo', args = [], name = 'demo' } = {}) {
  mkdirSync(artefacts, { recursive: true });
  const dataDir = path.join(artefacts, `${name}-data`);
  rmSync(dataDir, { recursive: true, force: true });
  const [http, mqtt, flow] = [await freePort(), await freePort(), await freePort()];
  const argv = command === 'demo'
    ? ['demo', '--data-dir', dataDir, '--http-listen', `127.0.0.1:${http}`, '--mqtt-listen', `127.0.0.1:${mqtt}`, '--flow-listen', `127.0.0.1:${flow}`, ...args]
    : [command, ...args];
  const log = createWriteStream(path.join(artefacts, `${name}.log`));
  const child = spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  const base = `http://127.0.0.1:${http}`;
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (exited) throw new Error(`citysec ${command} exited early (${JSON.stringify(exited)}); see ${name}.log`);
    try {
      const res = await fetch(`${base}/readyz`);
      if (res.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`citysec ${command} did not become ready`); }
    await sleep(250);
  }
  const token = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  const api = async (method, p, body, { bearer = token, raw = false } = {}) => {
    const headers = {};
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (raw) return res;
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  return {
    base, token, api, dataDir, ports: { http, mqtt, flow },
    async addUser(userName, role) {
      await api('POST', '/api/v1/users', { name: userName, role, password: PASSWORD });
    },
    async stop() {
      if (exited) return;
      child.kill('SIGINT');
      for (let i = 0; i < 100 && !exited; i++) await sleep(100);
      if (!exited) child.kill('SIGKILL');
      for (let i = 0; i < 50 && !exited; i++) await sleep(100);
    },
  };
}

export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--enable-precise-memory-info'];

export async function launchBrowser() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS });
}

// Signs `user` in through the console's form in a new context; returns the page.
export async function signIn(browser, base, user, { viewport = { width: 1400, height: 900 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  await page.goto(base + '/');
  await page.fill('#login-user', user);
  await page.fill('#login-password', PASSWORD);
  await page.click('form.login button[type=submit]');
  await page.waitForSelector('header.top .who');
  return page;
}
