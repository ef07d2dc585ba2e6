// Driving Debian's Chromium (playwright-core) at the status page: shared by the integration test (a controller on
// loopback) and the e2e test (the lab's edge on the admin host).
import type { Page } from 'playwright-core';

export const CHROMIUM = process.env.SWARMGATE_CHROMIUM ?? '/usr/bin/chromium';

/** Chromium's own abort on a change of the host's interfaces, however Playwright words it. */
export function networkChanged(error: unknown): boolean {
  return /ERR_NETWORK_CHANGED|chrome-error:\/\/chromewebdata/.test(String(error));
}

/**
 * Opens `url`. Chromium aborts a navigation with ERR_NETWORK_CHANGED when the host's interfaces change (containers
 * and their addresses come and go on this machine); that says nothing about the page, so it is retried.
 */
export async function open(page: Page, url: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await page.goto(url);
      return;
    } catch (error) {
      // Chromium may also start a navigation again by itself after such an abort: Playwright then reports the first
      // one as interrupted, and the page is loaded by the second, which is waited for. The second goes to where the
      // first had got to, which is not `url` when the abort came after a redirect (`/` → `/status` on the admin
      // host): the caller checks where the page ended. If the second is aborted too, the page is opened again.
      const restarted = /interrupted by another navigation to "([^"]+)"/.exec(String(error))?.[1];
      if (restarted !== undefined) {
        // Either the page it went to loads, or Chromium's error page does (the second was aborted as well).
        await page.waitForURL((at) => at.href === restarted || at.protocol === 'chrome-error:', {
          waitUntil: 'load',
        });
        if (!page.url().startsWith('chrome-error:')) return;
        if (attempt >= 5) throw error;
        continue;
      }
      if (attempt >= 5 || !networkChanged(error)) throw error;
    }
  }
}

/**
 * Submits the sign-in form and waits for what follows. The form's POST is a navigation too, which the same
 * interface change can abort (the page then shows Chromium's error page): the form is opened and sent again.
 */
export async function submitToken(
  page: Page,
  url: string,
  token: string,
  after: () => Promise<void>,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await page.getByLabel('Admin token').fill(token);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await after();
      return;
    } catch (error) {
      if (attempt >= 5 || !(networkChanged(error) || page.url().startsWith('chrome-error:'))) throw error;
      await open(page, url);
    }
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
