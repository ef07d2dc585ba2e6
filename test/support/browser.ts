// Driving Debian's Chromium (playwright-core) at the status page: shared by the integration test (a controller on
// loopback) and the e2e test (the lab's edge on the admin host).
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import type { Browser, Page } from 'playwright-core';

export const CHROMIUM = process.env.SWARMGATE_CHROMIUM ?? '/usr/bin/chromium';

const SUPPORT_DIR = path.dirname(fileURLToPath(import.meta.url));

/** A browser in a network namespace of its own, and what joins it to the machine's loopback. */
export interface IsolatedBrowser {
  readonly browser: Browser;
  close(): Promise<void>;
}

/**
 * Launches Debian's Chromium (headless, no sandbox: root in a container cannot use it) in a network namespace of its
 * own (isolated-chromium.sh), where 127.0.0.1:<port> reaches the machine's 127.0.0.1:<port> for each of `ports`.
 * Chromium aborts page loads with ERR_NETWORK_CHANGED when the machine's interfaces change, as they do whenever a
 * container starts or stops; in its namespace nothing changes, so no load is ever aborted for that.
 */
export async function launchIsolatedChromium(options: {
  readonly ports: readonly number[];
  readonly args?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
}): Promise<IsolatedBrowser> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-browser-'));
  const openSockets = new Set<net.Socket>();
  const track = (socket: net.Socket): net.Socket => {
    openSockets.add(socket);
    socket.on('close', () => openSockets.delete(socket));
    return socket;
  };
  const servers = await Promise.all(
    options.ports.map(async (port) => {
      const socket = path.join(dir, `${port}.sock`);
      const server = net.createServer((client) => {
        track(client);
        const machine = track(net.connect(port, '127.0.0.1'));
        client.on('error', () => machine.destroy());
        machine.on('error', () => client.destroy());
        client.pipe(machine).pipe(client);
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socket, resolve);
      });
      return { server, forward: `${port}=${socket}` };
    }),
  );
  const closeServers = (): Promise<unknown> => {
    const closed = Promise.all(servers.map(({ server }) => new Promise((resolve) => server.close(resolve))));
    for (const socket of openSockets) socket.destroy();
    return closed;
  };
  try {
    const browser = await chromium.launch({
      executablePath: path.join(SUPPORT_DIR, 'isolated-chromium.sh'),
      headless: true,
      args: ['--no-sandbox', ...(options.args ?? [])],
      env: {
        ...(options.env ?? process.env),
        SWARMGATE_BROWSER_NODE: process.execPath,
        SWARMGATE_BROWSER_FORWARDER: path.join(SUPPORT_DIR, 'netns-forwarder.ts'),
        SWARMGATE_BROWSER_READY: path.join(dir, 'ready'),
        SWARMGATE_BROWSER_FORWARDS: servers.map(({ forward }) => forward).join(' '),
        SWARMGATE_CHROMIUM_BINARY: CHROMIUM,
      },
    });
    return {
      browser,
      async close() {
        await browser.close();
        await closeServers();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await closeServers();
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** Fills in the sign-in form and sends it. */
export async function submitToken(page: Page, token: string): Promise<void> {
  await page.getByLabel('Admin token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/**
 * Waits until `body`, a function body run in the page with `arg`, returns something truthy. A string predicate will
 * not do: Playwright evaluates a string anew on every poll with `eval`, which the page's CSP (script-src 'self')
 * forbids once a poll runs outside DevTools' own call, so it fails whenever the first check is false. Here DevTools
 * makes the body a function in the page once, and each poll only calls it. (A string because this project's types
 * have no DOM.)
 */
export async function waitInPage(page: Page, body: string, arg?: unknown, timeout?: number): Promise<void> {
  const predicate = await page.evaluateHandle<(arg: unknown) => unknown>(`(arg) => { ${body} }`);
  try {
    await page.waitForFunction(
      (input) => input.predicate(input.arg),
      { predicate, arg },
      timeout === undefined ? {} : { timeout },
    );
  } finally {
    await predicate.dispose().catch(() => undefined);
  }
}

/** What has the keyboard focus now: its id or text, and whether its focus ring shows. */
export interface Focused {
  readonly id: string;
  /** Its ARIA role attribute, or '' (a scrolling table region says 'region'). */
  readonly role: string;
  readonly text: string;
  readonly outline: string;
  readonly width: number;
}

/** The focused element (the page's code runs in the browser, and this project's types have no DOM: a string). */
export function focused(page: Page): Promise<Focused> {
  return page.evaluate<Focused>(`(() => {
    const active = document.activeElement;
    const style = getComputedStyle(active);
    return {
      id: active.id,
      role: active.getAttribute('role') || '',
      text: (active.textContent || '').trim(),
      outline: style.outlineStyle,
      width: parseFloat(style.outlineWidth),
    };
  })()`);
}
