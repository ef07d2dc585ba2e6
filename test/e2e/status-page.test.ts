// The status page on the lab, reached as an operator reaches it: Debian's Chromium (playwright-core, headless) opens
// https://admin.e2e.test:20443 (SWARMGATE_ADMIN_HOST in stack.e2e.yml; the name is mapped to 127.0.0.1 inside the
// browser only), through the lab's edge over HTTP/2, with the certificate Pebble issued for that host. The browser
// trusts Pebble's current root the way an operator trusts a private CA, in its own certificate store; no certificate
// error is ignored. It asks for the admin token; then shows the lab's routes; scaling a service changes its task count
// without a reload; a bad label's problem appears; a certificate shows with its expiry; the keyboard reaches the
// controls in order and Enter works them. UPDATE_SCREENSHOT=1 saves docs/status-page.png (the README's picture).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { focused, launchIsolatedChromium, submitToken, waitInPage } from '../support/browser.ts';
import type { Focused, IsolatedBrowser } from '../support/browser.ts';
import {
  controllerStatus,
  createService,
  docker,
  EDGE_HTTPS_PORT,
  httpsGet,
  labToken,
  pebbleRoot,
  removeService,
  REPO_ROOT,
  uniqueName,
  waitFor,
} from './support/lab.ts';

const run = promisify(execFile);

/** SWARMGATE_ADMIN_HOST of the lab's controller (stack.e2e.yml). */
const ADMIN_HOST = 'admin.e2e.test';
const ORIGIN = `https://${ADMIN_HOST}:${EDGE_HTTPS_PORT}`;
const PAGE = `${ORIGIN}/status`;
const SCREENSHOT =
  process.env.UPDATE_SCREENSHOT === '1'
    ? path.join(REPO_ROOT, 'docs', 'status-page.png')
    : path.join(os.tmpdir(), 'swarmgate-status-page-lab.png');
/** Waits in the browser: an edge applies a change and the page's next push shows it within seconds on the lab. */
const BROWSER_TIMEOUT_MS = 90_000;

const app = uniqueName('sg-e2e-page');
const appHost = `${app}.e2e.test`;
const broken = uniqueName('sg-e2e-page-bad');

let home: string;
let root: string;
let isolated: IsolatedBrowser | undefined;
let browser: Browser;

/**
 * A home directory whose NSS store (what Chromium on Linux reads for the user's own CAs) trusts Pebble's current
 * root for TLS servers, as `certutil` does for an operator's private CA. Only this browser's HOME points at it.
 */
async function trustingHome(rootPem: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-browser-home-'));
  const nssdb = path.join(dir, '.pki', 'nssdb');
  await mkdir(nssdb, { recursive: true });
  const rootFile = path.join(dir, 'pebble-root.pem');
  await writeFile(rootFile, rootPem);
  await run('certutil', ['-N', '-d', `sql:${nssdb}`, '--empty-password']);
  await run('certutil', [
    '-A',
    '-d',
    `sql:${nssdb}`,
    '-n',
    'lab Pebble root',
    '-t',
    'C,,',
    '-a',
    '-i',
    rootFile,
  ]);
  return dir;
}

before(async () => {
  // The app gets a certificate of its own from Pebble (the page shows it), and the admin host's is Pebble's too.
  await createService({ name: app, labels: { VIRTUAL_HOST: appHost, LETSENCRYPT_HOST: appHost } });
  root = await pebbleRoot();
  // The admin host serves the page over a chain to this root before the browser is asked to trust it.
  await waitFor(
    `the admin host's page over HTTPS verified by Pebble's root`,
    async () =>
      (await httpsGet(EDGE_HTTPS_PORT, '/status', ADMIN_HOST, root)).status === 200 ? true : undefined,
    { timeoutMs: 120_000, intervalMs: 500 },
  );
  home = await trustingHome(root);
  isolated = await launchIsolatedChromium({
    ports: [EDGE_HTTPS_PORT],
    env: { ...process.env, HOME: home },
    // The admin host's name leads to the lab's edge on this machine, for this browser only (no /etc/hosts).
    args: [`--host-resolver-rules=MAP ${ADMIN_HOST} 127.0.0.1`],
  });
  browser = isolated.browser;
});

after(async () => {
  await isolated?.close();
  await Promise.all([removeService(app), removeService(broken)]);
  if (home) await rm(home, { recursive: true, force: true });
});

async function newContext(width = 1280, height = 900): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width, height } });
  context.setDefaultTimeout(BROWSER_TIMEOUT_MS);
  return context;
}

const appRow = (page: Page) => page.locator('#routes tr', { hasText: appHost });

async function signedIn(context: BrowserContext): Promise<Page> {
  const page = await context.newPage();
  await page.goto(PAGE);
  await submitToken(page, labToken());
  await appRow(page)
    .waitFor()
    .catch(async (error: unknown) => {
      // Where the page stood: the sign-in form again, or the page without data (its summary line says why).
      const summary = await page
        .locator('#summary, [role="alert"]')
        .allTextContents()
        .catch(() => []);
      throw new Error(`${String(error)}\nat ${page.url()}: ${summary.join(' | ')}`, { cause: error });
    });
  return page;
}

test('the admin host asks to sign in, refuses a wrong token, then shows the lab routes, over HTTP/2 on port 20443', async () => {
  const context = await newContext();
  const page = await context.newPage();
  await page.goto(`${ORIGIN}/`);
  assert.equal(page.url(), PAGE, 'the admin host sends / to the page');
  assert.equal(await page.getByRole('heading', { name: 'Sign in' }).count(), 1);
  assert.equal(await page.locator('#routes').count(), 0, 'no data before signing in');
  // The case a same-origin check could get wrong: HTTP/2 (no Host header) on a port other than 443.
  assert.equal(
    await page.evaluate<string>(`performance.getEntriesByType('navigation')[0].nextHopProtocol`),
    'h2',
  );

  await submitToken(page, 'not-the-token');
  await page.getByRole('alert').waitFor();
  assert.match((await page.getByRole('alert').textContent()) ?? '', /not the admin token/);
  assert.equal(await page.locator('#routes').count(), 0);

  await submitToken(page, labToken());
  await appRow(page).waitFor();
  const cookie = (await context.cookies()).find((candidate) => candidate.name === 'swarmgate_session');
  assert.equal(cookie?.domain, ADMIN_HOST);
  assert.equal(cookie.secure, true);
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');

  // Every host the controller routes now is a row of the page (the page may have more: it also lists unrouted ones).
  const status = await controllerStatus();
  const hosts = status.services.flatMap((service) => service.hosts);
  assert.ok(hosts.includes(appHost), `the controller routes ${appHost}: ${hosts.join(', ')}`);
  await waitInPage(
    page,
    `return arg.every((host) => [...document.querySelectorAll('#routes th')].some((th) => th.textContent.startsWith(host)))`,
    hosts,
  );
  const shown = await page.locator('#routes th').allTextContents();
  for (const host of hosts) {
    assert.ok(
      shown.some((text) => text.startsWith(host)),
      `${host} among the page's routes: ${shown.join(', ')}`,
    );
  }
  assert.match((await appRow(page).textContent()) ?? '', /yes/);
  await context.close();
});

test('scaling a lab service changes its task count on the page live, without a reload', async () => {
  const context = await newContext();
  const page = await signedIn(context);
  const tasks = page.locator(`td.tasks[data-service="${app}"]`);
  await tasks.filter({ hasText: /^1 of 1$/ }).waitFor();
  // (Strings: the page's code runs in the browser, and this project's types have no DOM.)
  await page.evaluate('window.loadedOnce = 1');

  await docker(['service', 'scale', '--detach', `${app}=3`]);
  await tasks.filter({ hasText: /^3 of 3$/ }).waitFor();
  assert.equal(await tasks.textContent(), '3 of 3');
  assert.equal(await page.evaluate('window.loadedOnce'), 1, 'the same page, not a reload');
  await context.close();
});

test('deploying a service with a bad label makes its problem appear', async () => {
  const context = await newContext();
  const page = await signedIn(context);
  assert.equal(await page.locator('#problems li', { hasText: broken }).count(), 0);
  await createService({ name: broken, labels: { VIRTUAL_HOST: 'bad host!' } });

  const problem = page.locator('#problems li', { hasText: broken });
  await problem.waitFor();
  const reported = await waitFor('the controller to report the bad label', async () =>
    (await controllerStatus()).problems.find((entry) => entry.service === broken),
  );
  assert.equal(reported.label, 'VIRTUAL_HOST');
  const text = (await problem.textContent()) ?? '';
  assert.ok(text.includes('VIRTUAL_HOST'), text);
  assert.ok(text.includes(reported.reason), `the page gives the reason "${reported.reason}": ${text}`);
  await context.close();
});

test("a certificate appears with its expiry: the app's, issued by the lab's CA", async () => {
  const certificate = await waitFor(
    `a valid certificate for ${appHost}`,
    async () => {
      const entry = (await controllerStatus()).certificates.find((candidate) => candidate.name === appHost);
      return entry?.state === 'valid' && entry.notAfter ? entry : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 500 },
  );
  const context = await newContext();
  const page = await signedIn(context);
  const row = page.locator('#certificates tr', { hasText: appHost });
  await row.filter({ hasText: 'valid (acme)' }).waitFor();
  const notAfter = new Date(certificate.notAfter ?? '').toISOString();
  const expiry = (await row.locator('td.expiry').textContent()) ?? '';
  assert.ok(
    expiry.startsWith(`${notAfter.slice(0, 10)} ${notAfter.slice(11, 16)} UTC (`),
    `expiry ${expiry} for notAfter ${notAfter}`,
  );
  assert.match(expiry, /\(\d+ days\)$/);
  // The page's own certificate is listed too.
  await page.locator('#certificates tr', { hasText: ADMIN_HOST }).filter({ hasText: 'valid' }).waitFor();
  await context.close();
});

test('keyboard: Tab reaches the controls in order with a visible focus, and Enter works them', async () => {
  const context = await newContext();
  const page = await signedIn(context);
  const reached: Focused[] = [];
  for (let i = 0; i < 6; i++) {
    await page.keyboard.press('Tab');
    reached.push(await focused(page));
  }
  // The skip link, sign-out, the filter, then each table's scrolling region (routes, edges, certificates).
  assert.deepEqual(
    reached.map((entry) => entry.id || entry.role || entry.text),
    ['Skip to routes', 'logout', 'filter', 'region', 'region', 'region'],
    JSON.stringify(reached.map((entry) => ({ ...entry, text: entry.text.slice(0, 40) }))),
  );
  for (const entry of reached) {
    assert.ok(entry.outline !== 'none' && entry.width >= 2, `visible focus on ${entry.id || entry.text}`);
  }

  // Back the same way; Enter on the skip link moves the focus to the routes, and the next Tab is the filter.
  for (let i = 0; i < 5; i++) await page.keyboard.press('Shift+Tab');
  assert.equal((await focused(page)).text, 'Skip to routes');
  await page.keyboard.press('Enter');
  assert.equal((await focused(page)).id, 'routes-heading');
  await page.keyboard.press('Tab');
  assert.equal((await focused(page)).id, 'filter');
  await page.keyboard.type(app);
  await page.locator('#routes tr').filter({ hasText: appHost }).waitFor();
  assert.deepEqual(
    (await page.locator('#routes th').allTextContents()).filter((text) => !text.startsWith(appHost)),
    [],
    'the filter leaves only the app',
  );

  // Sign out with Enter (a form POST through the edge: the same-origin check over HTTP/2), then sign in with the
  // keyboard alone: the token field has the focus, Enter sends the form.
  await page.keyboard.press('Shift+Tab');
  assert.equal((await focused(page)).id, 'logout');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  // The form's autofocus lands on the token field once the page has rendered, a frame after it loaded.
  await waitInPage(page, `return document.activeElement?.id === 'token'`);
  await page.keyboard.type(labToken());
  await page.keyboard.press('Enter');
  await appRow(page).waitFor();
  await context.close();
});

test('live traffic of the app appears on the page (and the README picture)', async () => {
  const context = await newContext();
  const page = await signedIn(context);
  const chart = appRow(page).locator('svg polyline');
  // A few requests a second to the app through the edge, until the page has drawn its chart (bounded: 60 s).
  const deadline = Date.now() + 60_000;
  while (!(await chart.count()) && Date.now() < deadline) {
    await Promise.all(
      Array.from({ length: 5 }, () => httpsGet(EDGE_HTTPS_PORT, '/', appHost, root).catch(() => null)),
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  // The chart is drawn once there are two samples. Not waitFor's "visible": a line of equal rates is flat (every
  // point at the top), has no height, and counts as hidden though it is on the page (CI saw that once).
  const points = ((await chart.getAttribute('points')) ?? '').split(' ').filter(Boolean);
  assert.ok(points.length >= 2, `a line through the samples: ${points.join(' ')}`);
  assert.match((await appRow(page).textContent()) ?? '', /\d+\.\d/, 'a request rate');
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  await context.close();
});
